"""Run a job's pipeline in a child process with limits; the worker survives whatever happens inside.

The child is a fresh interpreter (`python -m workers.child WORKDIR`) in its own process group, with an
address-space limit, no core dumps, a scrubbed environment (no database or broker credentials) and a
wall-clock limit after which the whole group is killed. With isolation active (JOB_ISOLATION, see
workers.isolation) it runs under bubblewrap and sees nothing but its working folder, as /job. It reports
progress as JSON lines on stdout and its outcome in WORKDIR/result.json. The child dies with the worker
(PR_SET_PDEATHSIG), so a SIGKILLed worker leaves no pipeline running for a job another worker is about to
take over.
"""

import contextlib
import ctypes
import logging
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from app.schemas.tasks import ChildResult, ChildSucceeded, Progress
from app.services.isolation import isolation_state
from workers.isolation import JOB_DIR, bwrap_command, make_undumpable

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
RESULT: TypeAdapter[ChildResult] = TypeAdapter(ChildResult)
STARTED = ".child-started"
"""The child writes this first thing in its working folder: inside bubblewrap, proof the folder is mounted."""


@dataclass
class Outcome:
    status: str
    """ok, failed, cancelled; or `stopped` when the worker stopped the pipeline for its own reason (lease
    lost, shutting down) and the job is not this attempt's to end."""
    result: ChildSucceeded | None = None
    code: str | None = None
    message: str | None = None
    retryable: bool = False
    """The process died (a signal): another attempt may succeed, unlike a pass that failed cleanly."""


def _child_env(workdir: Path, threads: int, isolated: bool = False) -> dict[str, str]:
    """The child's whole environment: nothing of the worker's but PATH and the GPU's; `workdir` is the
    folder as the child sees it."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "LANG": "C.UTF-8",
        "TMPDIR": str(workdir / "tmp"),
    }  # library temp files (onnxruntime's) stay in the job's workdir
    for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    if isolated:
        env["SQUEEZE_ISOLATED"] = "1"  # lets the child load formats that are only safe in isolation
    return env


PR_SET_PDEATHSIG = 1
# Resolved here, not in the forked child: the worker has threads (heartbeat, maintenance), so between
# fork and exec the child may only make plain calls, never load a library or take a lock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _limits(memory_bytes: int | None) -> Callable[[], None]:
    def apply() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if _prctl is not None:  # die with the worker, never outlive it as an orphan
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return apply


def _log_tail(workdir: Path, lines: int = 8) -> None:
    """The end of the child's stderr, to the worker log only: it may hold paths and raw library text."""
    try:
        tail = "\n".join((workdir / "child.log").read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return
    log.warning("pipeline process in %s ended abnormally; its stderr ends with:\n%s", workdir, tail)


def _command(workdir: Path, isolated: bool, squeeze_home: Path) -> list[str]:
    if not isolated:
        return [sys.executable, "-m", "workers.child", str(workdir)]
    make_undumpable()
    return bwrap_command([sys.executable, "-m", "workers.child", str(JOB_DIR)], workdir, squeeze_home)


@dataclass(frozen=True)
class ChildLimits:
    """What a child is started with. A prestarted child serves only a job that needs the same."""

    memory_bytes: int | None
    """None sets no address-space limit: a CUDA job's driver reserves virtual address space far beyond
    what it uses, and fails to start under RLIMIT_AS."""
    threads: int
    isolation: str
    """JOB_ISOLATION"""


def spawn(folder: Path, limits: ChildLimits, squeeze_home: Path) -> subprocess.Popen[bytes]:
    """A child for the job in `folder`. It loads the pipeline's libraries, then waits for the line that says
    its task is in place (`hand_over`); its stderr goes to folder/child.log."""
    active = isolation_state(limits.isolation).active
    (folder / "tmp").mkdir(exist_ok=True)
    with (folder / "child.log").open("wb") as stderr:
        return subprocess.Popen(
            _command(folder, active, squeeze_home),
            cwd=str(folder),
            env=_child_env(JOB_DIR if active else folder, limits.threads, active),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_limits(limits.memory_bytes),
        )  # noqa: PLW1509 (plain syscalls only)


def hand_over(proc: subprocess.Popen[bytes]) -> None:
    """Tell the child its task.json is written: it starts the job."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died waiting: its exit status says how
        proc.stdin.write(b"go\n")
        proc.stdin.close()


def _mounted(proc: subprocess.Popen[bytes], folder: Path, wait_s: float = 5.0) -> bool:
    """Whether the child runs with its folder mounted (it wrote workers.child.STARTED there), waiting a little
    for one still starting: renaming the folder before bubblewrap has bound it would leave it nothing to bind."""
    deadline = time.monotonic() + wait_s
    while proc.poll() is None:
        if (folder / STARTED).exists():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return False


class Prestart:
    """The next job's child, started while the worker waits: a fresh interpreter in a sandbox of its own
    as ever, with the libraries already imported (seconds of every job's start). Isolated children only:
    inside bubblewrap the child's folder is /job whatever its host path, so the prestarted folder becomes
    the job's by a rename (the bind mount follows the folder); an unisolated child names its host path."""

    def __init__(self) -> None:
        self._child: tuple[subprocess.Popen[bytes], Path, ChildLimits] | None = None

    def start(self, work_root: Path, limits: ChildLimits, squeeze_home: Path) -> None:
        self.discard()
        if not isolation_state(limits.isolation).active:
            return
        folder = work_root / f".prestart-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self._child = (spawn(folder, limits, squeeze_home), folder, limits)

    def claim(self, workdir: Path, limits: ChildLimits) -> subprocess.Popen[bytes] | None:
        """The prestarted child, its folder now `workdir` (which must not exist), if it is alive and was
        started with these limits; else None (and it is discarded)."""
        if self._child is None:
            return None
        proc, folder, started_with = self._child
        if started_with != limits or not _mounted(proc, folder):
            self.discard()
            return None
        self._child = None
        workdir.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(workdir)
        return proc

    @staticmethod
    def remove_leftovers(work_root: Path) -> None:
        """The folders of prestarted children whose worker process on this host is gone."""
        host = socket.gethostname()
        for folder in work_root.glob(f".prestart-{host}-*"):
            pid = folder.name.rsplit("-", 1)[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(folder, ignore_errors=True)

    def discard(self) -> None:
        if self._child is not None:
            proc, folder, _ = self._child
            self._child = None
            kill_group(proc)
            shutil.rmtree(folder, ignore_errors=True)


def _signal_of(returncode: int, isolated: bool) -> int | None:
    """The signal that ended the child: bwrap reports its child's death by signal N as exit status 128 + N."""
    if returncode < 0:
        return -returncode
    if isolated and 128 < returncode < 128 + signal.NSIG:
        return returncode - 128
    return None


def run_child(
    workdir: Path,
    *,
    timeout_s: float,
    limits: ChildLimits,
    on_event: Callable[[Progress], None],
    should_stop: Callable[[], str | None],
    squeeze_home: Path,
    prestarted: subprocess.Popen[bytes] | None = None,
    on_start: Callable[[int], None] = lambda pid: None,
    poll_s: float = 0.5,
) -> Outcome:
    """Run the pipeline for WORKDIR/task.json in `prestarted` (a child already working in WORKDIR, from
    Prestart.claim) or a new child; returns how it ended. Never raises for the child's faults.

    `should_stop` is polled every `poll_s`: `cancelled` ends the job as cancelled; any other reason kills
    the pipeline and returns status `stopped` with that reason as the code. `squeeze_home` is kept out of
    the child's view."""
    state = isolation_state(limits.isolation)
    if state.unavailable:
        return Outcome("failed", code="isolation_unavailable", message=f"JOB_ISOLATION=bwrap: {state.detail}")
    proc = prestarted or spawn(workdir, limits, squeeze_home)
    hand_over(proc)
    on_start(proc.pid)
    events: queue.Queue[Progress] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(Progress.model_validate_json(line))
            except ValidationError:
                continue  # stray output from a library; progress lines are Progress JSON

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    stopped: str | None = None
    next_check = 0.0
    while proc.poll() is None:
        _drain(events, on_event)
        now = time.monotonic()
        if now > deadline:
            stopped = "timeout"
        elif now >= next_check:
            next_check = now + poll_s
            stopped = should_stop()
        if stopped:
            kill_group(proc)
            break
        time.sleep(0.05)
    reader.join(timeout=5)
    _drain(events, on_event)
    kill_group(proc)  # the pipeline's own subprocesses, if it left any
    if stopped == "cancelled":
        return Outcome("cancelled", code="cancelled", message="cancelled by the client")
    if stopped == "timeout":
        return Outcome("failed", code="timeout", message=f"the job ran past its limit of {timeout_s:.0f} s")
    if stopped:
        return Outcome("stopped", code=stopped, message=f"the worker stopped the pipeline: {stopped}")
    result_path = workdir / "result.json"
    if proc.returncode == 0 and result_path.exists():
        result = RESULT.validate_json(result_path.read_bytes())
        if isinstance(result, ChildSucceeded):
            return Outcome("ok", result=result)
        return Outcome("failed", code=result.error.code, message=result.error.message)
    _log_tail(workdir)
    signum = _signal_of(proc.returncode, state.active)
    if signum == signal.SIGKILL:
        return Outcome(
            "failed",
            code="out_of_memory",
            retryable=True,
            message=(
                "the pipeline process was killed (SIGKILL), most likely by the kernel's out-of-memory "
                "killer: give the worker more memory or the job a smaller model"
            ),
        )
    if signum is not None:
        name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
        return Outcome("failed", code="crashed", retryable=True, message=f"the pipeline process died with {name}")
    return Outcome("failed", code="crashed", message=f"the pipeline process exited with status {proc.returncode}")


def _drain(events: "queue.Queue[Progress]", on_event: Callable[[Progress], None]) -> None:
    latest = ended_step = None
    while True:
        try:
            latest = events.get_nowait()
        except queue.Empty:
            break
        if latest.interim is not None:
            ended_step = latest
    if ended_step is not None and ended_step is not latest:  # a step's figures are kept: a search reads them
        on_event(ended_step)
    if latest is not None:  # otherwise only the newest progress matters
        on_event(latest)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group: the pipeline and anything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
