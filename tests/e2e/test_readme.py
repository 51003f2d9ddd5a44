"""The README's walk-through, run as written against a live service: every ```sh block of the
"Walk-through with curl" section, in order, in one bash with `set -euo pipefail`, from a folder laid out
like the repository root (.venv, var/local-api-key). A block that fails names itself; then every job the
walk-through made must have succeeded."""

import os
import re
import subprocess
from pathlib import Path

import httpx

from tests.conftest import ROOT, Stack

SECTION = "## Walk-through with curl"


def walkthrough_blocks(readme: str) -> list[str]:
    """The sh blocks between the walk-through's heading and the next second-level heading."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return re.findall(r"```sh\n(.*?)```", readme[start : end if end > 0 else None], flags=re.DOTALL)


def test_the_blocks_are_found() -> None:
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 5 and "squeeze examples" in blocks[0] and "squeeze submit" in blocks[-1]


def test_the_readme_walkthrough_runs_as_written(stack: Stack, tmp_path: Path, client: httpx.Client) -> None:
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "local-api-key").write_text(stack.key())
    script = "set -euo pipefail\n" + "".join(f"echo '::block {i}::' >&2\n{block}\n" for i, block in enumerate(blocks))
    env = {k: v for k, v in os.environ.items() if k not in ("KEY", "URL", "SQUEEZE_API_KEY")}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={**env, "SQUEEZE_URL": stack.url},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    failed = re.findall(r"::block (\d+)::", done.stderr)
    assert done.returncode == 0, (
        f"README walk-through block {failed[-1] if failed else '?'} exited {done.returncode}:\n"
        f"{blocks[int(failed[-1])] if failed else ''}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
    assert "verdict PASS" in done.stderr, f"the CLI example meets its spec without warnings: {done.stderr[-2000:]}"
    jobs = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    made = [j for j in jobs if j["id"] in done.stdout + done.stderr]
    assert len(made) >= 3, "the curl jobs and the CLI's job"
    assert all(j["status"] == "succeeded" for j in made), [(j["id"], j["status"], j["error"]) for j in made]
    assert (tmp_path / "result" / "model.onnx").is_file(), "the CLI downloaded the converted model"
    assert (tmp_path / "model-int8.onnx").stat().st_size > 0, "the curl download wrote the int8 model"
