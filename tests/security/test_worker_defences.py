"""The worker's own defences, without processes: external data that leaves the model's folder by a link,
the sandbox child's environment, and the rate limiter's arithmetic."""

import os
from pathlib import Path

import pytest

from app.services.ratelimit import DatabaseBuckets, retry_after
from tests.security.conftest import tiny_onnx
from workers.runtime import PassFailed, check_external_data
from workers.sandbox import _child_env


def _model_with_data(folder: Path, location: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(tiny_onnx(location))
    return path


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(b"\0" * 16)
    return path


@pytest.mark.parametrize("how", ["symlink", "hardlink", "folder symlink", "dotdot", "absolute"])
def test_external_data_must_be_a_plain_file_in_the_folder(tmp_path: Path, secret: Path, how: str) -> None:
    folder = tmp_path / "model"
    location = {
        "symlink": "w.bin",
        "hardlink": "w.bin",
        "folder symlink": "sub/w.bin",
        "dotdot": "../secret",
        "absolute": str(secret),
    }[how]
    path = _model_with_data(folder, location)
    if how == "symlink":
        (folder / "w.bin").symlink_to(secret)
    elif how == "hardlink":
        os.link(secret, folder / "w.bin")
    elif how == "folder symlink":
        (folder / "sub").symlink_to(tmp_path)
        os.link(secret, tmp_path / "w.bin")
    with pytest.raises(PassFailed, match="not a plain file inside"):
        check_external_data(path)


def test_external_data_in_the_folder_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    path = _model_with_data(folder, "data/w.bin")
    (folder / "data").mkdir()
    (folder / "data" / "w.bin").write_bytes(b"\0" * 16)
    check_external_data(path)


def test_the_sandbox_child_gets_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "BROKER_URL",
        "REDIS_URL",
        "STORAGE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "SQUEEZE_HOME",
        "PGPASSWORD",
        "HF_TOKEN",
    ):
        monkeypatch.setenv(name, "postgresql://user:hunter2@db/squeeze")
    env = _child_env(tmp_path, 1)
    assert not any("hunter2" in value for value in env.values()), f"a secret reached the child: {env}"
    assert env["HOME"] == str(tmp_path) and env["HF_HUB_OFFLINE"] == "1"


def test_token_buckets_allow_a_burst_then_the_rate(tmp_path: Path) -> None:
    from app.db.migrate import upgrade_to_head

    url = f"sqlite:///{tmp_path / 'buckets.db'}"
    upgrade_to_head(url)
    now = [1000.0]
    buckets = DatabaseBuckets(url, rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("k")
    assert wait == pytest.approx(0.5) and retry_after(wait) == "1"
    assert buckets.take("other") == 0.0, "keys do not share a bucket"
    now[0] += 0.5
    assert buckets.take("k") == 0.0, "refilled at the rate"
