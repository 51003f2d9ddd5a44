"""The command line's user errors: one line, no traceback, and an exit status a CI step can tell apart."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, _free_port


def squeeze(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unreachable_server_is_one_line_and_exit_4(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    url = f"http://127.0.0.1:{_free_port()}"
    done = squeeze("submit", str(model), "--spec", '{"passes": [{"type": "optimize"}]}', "--url", url)
    assert done.returncode == 4, f"unreachable must differ from a failed job (1): {done.stderr}"
    assert f"cannot reach Squeeze at {url}" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_spec_file_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    done = squeeze("submit", "mdl_x", "--spec", str(tmp_path / "nope.json"))
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr


def test_invalid_inline_json_says_where(tmp_path: Path) -> None:
    done = squeeze("submit", "mdl_x", "--spec", '{"passes": [')
    assert done.returncode == 2 and "not valid JSON" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_model_file_is_named() -> None:
    done = squeeze("submit", "digits_cnn.onnx", "--spec", '{"passes": [{"type": "optimize"}]}')
    assert done.returncode == 2 and "'digits_cnn.onnx': no such model file" in done.stderr


def test_every_option_has_help_text() -> None:
    from app.cli import build_parser

    missing = []
    stack = [("squeeze", build_parser())]
    while stack:
        name, parser = stack.pop()
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                stack += [(f"{name} {n}", p) for n, p in action.choices.items()]
            elif action.option_strings and not action.help:
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, f"options without help text: {missing}"


def test_keys_refuse_a_home_without_a_database_and_name_it(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    done = squeeze("keys", "create", "--tenant", "t", env={"SQUEEZE_HOME": str(home)}, cwd=tmp_path)
    assert done.returncode == 1 and f"SQUEEZE_HOME={home}" in done.stderr
    assert not home.exists(), "no database (or folder) was made where the server is not"


def test_gpu_workers_on_a_host_without_gpus_say_so(tmp_path: Path) -> None:
    env = {"SQUEEZE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    done = squeeze("worker", "--queues", "gpu", "--gpus", "all", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--gpus all: nvidia-smi found no GPU" in done.stderr and "--gpus 0,1" in done.stderr, done.stderr
