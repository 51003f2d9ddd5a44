"""The bubblewrap command that runs a job's child with nothing but its job in view.

Inside: a read-only system (/usr and the loader's few /etc files), the Python install, the venv and the
`app`, `workers` and `passes` packages read-only; the job's working folder read-write at /job (its inputs were copied
there by the worker, its outputs are copied out by the worker); a private /tmp; uid 65534 in a user
namespace with every capability dropped; its own pid namespace (the worker's processes and their
environ are not there), its own network namespace (no interface but a down loopback: no database, broker,
API or internet). SQUEEZE_HOME (database, key file, store, other jobs) is never mounted, and is hidden
under an empty tmpfs should it lie inside one of the folders that are.
"""

import ctypes
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB_DIR = Path("/job")
"""Where the job's working folder appears inside: no host path reaches the child or its messages."""
NOBODY = "65534"
PR_SET_DUMPABLE = 4
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
)


def _system_mounts() -> list[str]:
    """/usr read-only; the merged-/usr links (/lib -> usr/lib) recreated as links, real folders bound."""
    args: list[str] = []
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    for name in ETC_FILES:
        args += ["--ro-bind-try", name, name]
    return args


def _python_mounts() -> list[Path]:
    """The interpreter's install, the venv, and the source packages the child imports."""
    folders = {
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        ROOT / "app",
        ROOT / "workers",
        ROOT / "passes",
    }
    return sorted(f for f in folders if not any(f != o and f.is_relative_to(o) for o in folders))


def _devices() -> list[str]:
    """GPU device nodes for a gpu worker; nothing else of /dev beyond bwrap's minimal one."""
    args: list[str] = []
    for node in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(node), str(node)]
    return args


def bwrap_command(child: list[str], workdir: Path, squeeze_home: Path) -> list[str]:
    """`child` (which names its working folder as JOB_DIR) wrapped in bubblewrap with `workdir` at JOB_DIR."""
    binary = shutil.which("bwrap") or "bwrap"
    args = [binary, "--unshare-all", "--uid", NOBODY, "--gid", NOBODY, "--cap-drop", "ALL", "--die-with-parent"]
    args += _system_mounts()
    # The private /tmp first: a checkout or venv that lives under /tmp is bound on top of it, not hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev", *_devices(), "--tmpfs", "/tmp"]
    mounted = _python_mounts()
    for folder in mounted:
        args += ["--ro-bind", str(folder), str(folder)]
    home = squeeze_home.resolve()
    if any(home.is_relative_to(folder) for folder in mounted):
        args += ["--tmpfs", str(home)]
    args += ["--bind", str(workdir), str(JOB_DIR), "--chdir", str(JOB_DIR), "--"]
    return args + child


def make_undumpable() -> None:
    """The worker cannot be ptraced or have its memory and environ read by a process of the same uid."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
