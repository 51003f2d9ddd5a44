"""Whether job children run isolated on this host: JOB_ISOLATION resolved against what the kernel allows.

Shared by the API (/readyz says whether jobs are isolated) and the worker (which builds the bubblewrap
command in workers.isolation and refuses to run a job unisolated when JOB_ISOLATION=bwrap)."""

import logging
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class IsolationState:
    mode: str
    """The setting: auto, bwrap or off."""
    active: bool
    """Job children run in their own user, mount, pid and network namespaces."""
    detail: str

    @property
    def unavailable(self) -> bool:
        """Isolation was required (JOB_ISOLATION=bwrap) and this host cannot provide it."""
        return self.mode == "bwrap" and not self.active


def _probe_bwrap() -> str | None:
    """None when bubblewrap can create every namespace a job child gets here, else why not."""
    binary = shutil.which("bwrap")
    if binary is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    command = [binary, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc"]
    try:
        done = subprocess.run(
            [*command, "--dev", "/dev", "--", "true"], capture_output=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {type(exc).__name__}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()[:200]
        return (
            f"bwrap cannot create namespaces here ({reason}); in a container give it "
            "security_opt seccomp=unconfined and apparmor=unconfined (README)"
        )
    return None


@lru_cache
def isolation_state(mode: str) -> IsolationState:
    """What JOB_ISOLATION=`mode` gives on this host; probed once per process and logged."""
    if mode == "off":
        state = IsolationState(mode, False, "JOB_ISOLATION=off: job children run as the worker's user, unisolated")
    else:
        problem = _probe_bwrap()
        detail = "bubblewrap: own user, mount, pid and network namespaces" if problem is None else problem
        state = IsolationState(mode, problem is None, detail)
    if state.active:
        log.info("job isolation: %s", state.detail)
    else:
        log.warning("job isolation is OFF (%s): %s", mode, state.detail)
    return state
