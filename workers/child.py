"""Entry point of the sandboxed child: `python -m workers.child WORKDIR`. Reads WORKDIR/task.json,
runs the pipeline, prints progress as JSON lines, writes WORKDIR/result.json."""

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from workers.runtime import PassFailed

OUT_OF_MEMORY = ("Failed to allocate memory", "bad_alloc", "bad allocation")


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    workdir = Path(sys.argv[1])
    task = json.loads((workdir / "task.json").read_text())
    outcome: dict[str, Any]
    try:
        from workers.pipeline import run_pipeline

        outcome = {"ok": True, **run_pipeline(task, workdir, emit, task["max_unpacked_bytes"], task["threads"])}
    except PassFailed as exc:
        outcome = {"ok": False, "error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        outcome = {
            "ok": False,
            "error": {"code": "out_of_memory", "message": "the job ran out of its memory limit (JOB_MEMORY_BYTES)"},
        }
    except Exception as exc:  # any other failure of a pass: the job fails with its message, the worker lives
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"[:2000]
        # onnxruntime reports an allocation refused by the memory limit as a plain failure
        code = "out_of_memory" if any(s in message for s in OUT_OF_MEMORY) else "pass_failed"
        outcome = {"ok": False, "error": {"code": code, "message": message}}
    (workdir / "result.json").write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
