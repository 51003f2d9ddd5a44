"""How a failure inside the child reads to the user: our bugs are `internal_error` (never the user's
`pass_failed`), a library's refusal is `pass_failed` naming the step, and no message carries the worker's
folders."""

from pathlib import Path

import onnx
import pytest

from workers import child
from workers.pipeline import handle_format


def _raised(call: object) -> Exception:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


def test_a_bug_in_our_code_is_an_internal_error(tmp_path: Path) -> None:
    exc = _raised(lambda: handle_format(None))  # type: ignore[arg-type]  # AttributeError raised by a line of workers/
    failed = child.failure(exc, tmp_path)
    assert failed.error.code == "internal_error", failed
    assert "bug of ours" in failed.error.message and "NoneType" not in failed.error.message


def test_a_library_refusal_is_pass_failed_naming_the_step_without_our_paths(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    child.Current.label = "optimize"
    exc = _raised(lambda: onnx.load(str(tmp_path / "model.onnx")))
    failed = child.failure(exc, tmp_path)
    assert failed.error.code == "pass_failed", failed
    assert "'optimize'" in failed.error.message, "the user reads which step failed"
    assert str(tmp_path) not in failed.error.message, "the worker's folder stays out of the message"


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("onnxruntime: Failed to allocate memory for x")])
def test_running_out_of_memory_says_so(exc: Exception, tmp_path: Path) -> None:
    assert child.failure(exc, tmp_path).error.code == "out_of_memory"
