"""Entry point of the sandboxed child: `python -m workers.child WORKDIR`. Loads the pipeline's libraries,
waits for the worker's line on stdin that says the task is in place (the worker may start the child before
its job arrives: workers.sandbox.Prestart), reads WORKDIR/task.json (a ChildTask), runs the pipeline, prints
Progress lines as JSON, writes WORKDIR/result.json (a ChildResult). Stdin closed with no line: the worker
discarded the child, which exits without a result.

How a failure reads: a PassFailed keeps its code and message (written for the user); running out of
memory is `out_of_memory`; an error raised by our own code (a TypeError, KeyError, a schema that does not
validate...) is `internal_error`; any other library exception is `pass_failed` naming the step. The
traceback always goes to the child's log, never into the message a user reads.
"""

import logging
import sys
import time
import traceback
from pathlib import Path

from pydantic import ValidationError

from app.schemas.errors import JobErrorCode
from app.schemas.tasks import ChildFailed, ChildResult, ChildTask, Progress
from workers.runtime import PassFailed
from workers.sandbox import STARTED

OUT_OF_MEMORY = ("Failed to allocate memory", "bad_alloc", "bad allocation")
PROGRAMMING_ERRORS = (
    TypeError,
    KeyError,
    AttributeError,
    NameError,
    IndexError,
    AssertionError,
    ValidationError,
    NotImplementedError,
    RuntimeError,
)
"""Raised from our own code these are bugs: `internal_error`. (RuntimeError only from our code: torch and
onnxruntime raise it too, which `_ours` tells apart by where the exception was raised.)"""
OUR_PACKAGES = tuple(str(Path(__file__).resolve().parents[1] / name) for name in ("app", "workers", "passes"))


class Current:
    """The step now running, for the message of a failure that does not say where it happened."""

    label = "load"


def emit(event: Progress) -> None:
    Current.label = event.current
    print(event.model_dump_json(), flush=True)


def _ours(exc: BaseException) -> bool:
    """Whether the exception was raised by a line of our own packages (not a library's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(OUR_PACKAGES)


def failure(exc: Exception, workdir: Path) -> ChildFailed:
    """What the user reads for an exception that is not a PassFailed: the worker's folders left out."""
    text = f"{type(exc).__name__}: {exc}".replace(str(workdir), ".")
    if isinstance(exc, MemoryError) or any(s in text for s in OUT_OF_MEMORY):
        return ChildFailed.of(
            JobErrorCode.out_of_memory,
            "the job ran out of its memory limit (JOB_MEMORY_BYTES): give the worker "
            "more memory or submit a smaller model",
        )
    if isinstance(exc, PROGRAMMING_ERRORS) and _ours(exc):
        return ChildFailed.of(
            JobErrorCode.internal_error,
            f"Squeeze failed at step {Current.label!r} because of a bug of ours ({type(exc).__name__}); the "
            "traceback is in the worker's log. Please report it with the job id",
        )
    return ChildFailed.of(
        JobErrorCode.pass_failed,
        f"step {Current.label!r} failed inside {type(exc).__module__.split('.')[0]}: {text[:500]}",
    )


def load_libraries() -> float:
    """Import the pipeline and every pass's run (torch, onnxruntime, transformers...): the seconds it took."""
    started = time.perf_counter()
    import workers.pipeline  # noqa: F401
    from passes.registry import configs, has_run, run_of

    for name in configs():
        if has_run(name):
            run_of(name)
    return time.perf_counter() - started


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    workdir = Path(sys.argv[1])
    (workdir / STARTED).touch()
    outcome: ChildResult
    try:
        imports_s = load_libraries()
        if not sys.stdin.readline():
            return 0  # a prestarted child the worker discarded: no job came
        task = ChildTask.model_validate_json((workdir / "task.json").read_text())
        from workers.pipeline import run_pipeline

        outcome = run_pipeline(task, workdir, emit, imports_s)
    except PassFailed as exc:
        outcome = ChildFailed.of(exc.code, exc.message)
    except Exception as exc:  # the process boundary: every failure becomes a result, the worker lives on
        traceback.print_exc()
        outcome = failure(exc, workdir)
    (workdir / "result.json").write_text(outcome.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
