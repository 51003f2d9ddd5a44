"""Start-up clean-up of temporary uploads: a crashed process's leftovers go, live uploads of the API's other
processes stay."""

import os
import time
from pathlib import Path

from app.services.uploads import STALE_UPLOAD_S, remove_stale


def test_start_up_removes_only_stale_uploads(tmp_path: Path) -> None:
    stale, live, other = tmp_path / "upload-old", tmp_path / "upload-live", tmp_path / "model.onnx"
    for path in (stale, live, other):
        path.write_bytes(b"x")
    long_ago = time.time() - STALE_UPLOAD_S - 60
    os.utime(stale, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    remove_stale(tmp_path)
    assert not stale.exists(), "an upload untouched for over an hour (a crashed process's) is removed at start-up"
    assert live.exists(), "an upload another API process is receiving right now must survive a restart"
    assert other.exists(), "only temporary uploads are cleaned up"
