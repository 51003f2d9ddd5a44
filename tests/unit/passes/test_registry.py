"""The registry finds every pass folder: each config has a run and each run a config, and the API's import
of the configs pulls in no heavy runtime."""

import subprocess
import sys
from pathlib import Path

import passes
from passes.registry import configs, has_run, run_of, variants

ROOT = Path(passes.__file__).parent


def test_every_pass_folder_has_a_config_and_a_run() -> None:
    folders = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(configs()) == folders, "every folder under passes/ is a pass the spec accepts"
    for name in folders:
        assert has_run(name), f"passes/{name}/config.py has no run.py beside it"
        assert callable(run_of(name)), f"passes/{name}/run.py defines no run()"
        for cls in variants(configs()[name]):
            assert getattr(cls.model_fields["type"].annotation, "__args__", None) == (name,), (
                f"{cls.__name__} names its folder"
            )


def test_every_run_has_a_config() -> None:
    runs = sorted(p.parent.name for p in ROOT.glob("*/run.py"))
    assert runs == sorted(configs()), "a run.py without a config.py would be a pass no spec can reach"


def test_importing_the_api_leaves_torch_onnxruntime_and_tensorflow_out() -> None:
    code = (
        "import sys, app.main; app.main.create_app().openapi(); "
        "from passes.registry import configs; configs(); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'transformers', 'openvino', 'nncf', 'tensorflow', 'onnx2tf', "
        "'keras', 'tf2onnx') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT.parent)
    assert out.stdout.strip() == "", f"the API imported {out.stdout.strip()}"


def test_a_method_folder_adds_its_variants_and_runs_its_own_work() -> None:
    from passes.registry import method_folders, run_for
    from tests.pass_runs import parse

    for name in configs():
        for folder in method_folders(name):
            assert (ROOT / name / folder / "run.py").exists(), f"passes/{name}/{folder} has no run.py"
    assert method_folders("quantize") == ["fp8", "nncf", "weight_only"]
    fp8 = parse(type="quantize", method="fp8")
    dynamic = parse(type="quantize", method="dynamic")
    assert run_for(fp8).__module__ == "passes.quantize.fp8.run", "a method folder's variant runs its own run.py"
    assert run_for(dynamic) is run_of("quantize"), "the pass's own variants run the pass's run.py"
