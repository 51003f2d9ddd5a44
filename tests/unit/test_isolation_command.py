"""The bubblewrap command's mount order: the private /tmp comes before the Python and source binds, so a
checkout or a venv that lives under /tmp (a `git clone` into /tmp) is still visible to the child."""

from pathlib import Path

from workers.isolation import _python_mounts, bwrap_command


def test_the_private_tmp_is_mounted_before_the_python_binds(tmp_path: Path) -> None:
    args = bwrap_command(["python", "-m", "workers.child"], tmp_path / "job", tmp_path / "home")
    tmpfs_tmp = next(i for i in range(len(args) - 1) if args[i : i + 2] == ["--tmpfs", "/tmp"])
    binds = [i for i in range(len(args) - 1) if args[i] == "--ro-bind" and Path(args[i + 1]) in _python_mounts()]
    assert binds and all(i > tmpfs_tmp for i in binds), "a venv under /tmp would be hidden by the private /tmp"
