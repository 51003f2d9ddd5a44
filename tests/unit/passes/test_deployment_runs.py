"""The deployment conversions run directly (no server) on a convolution whose input is named as exporters name
it (`input.1`) and whose output is an image too: TFLite takes and gives channels-last tensors, recorded on the
handle so `run` feeds and reads it in the original's layout; an OpenVINO IR with float16 weights computes what
the ONNX did."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.runtime import ModelHandle, run


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("conv") / "conv.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, 8, 8),),
        str(path),
        input_names=["input.1"],
        output_names=["features"],
        dynamo=False,
        dynamic_axes={"input.1": [0], "features": [0]},
    )
    return path


def converted(conv_onnx: Path, tmp_path: Path, **fields: object) -> tuple[ModelHandle, ModelHandle, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    handle = ModelHandle("onnx", ["input.1"], ["features"], {"input.1": [0]}, path=conv_onnx)
    ctx = PassContext(workdir=tmp_path, step=0, device="cpu", example={"input.1": x}, datasets={"ds": {"input.1": x}})
    return handle, apply(parse(type="convert", **fields), handle, ctx), x


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_tflite_is_channels_last_and_run_in_the_originals_layout(
    conv_onnx: Path, tmp_path: Path, precision: str
) -> None:
    calibration = {"calibration": {"dataset_id": "ds", "samples": 5}} if precision == "int8" else {}
    original, tflite, x = converted(conv_onnx, tmp_path, to="tflite", precision=precision, **calibration)
    assert tflite.kind == "tflite" and tflite.input_transposes == {"input.1": [0, 2, 3, 1]}, "NCHW in -> NHWC"
    assert tflite.output_transposes == {"features": [0, 3, 1, 2]}, "an NHWC output goes back to NCHW"
    want, got = run(original, {"input.1": x})[0], run(tflite, {"input.1": x})[0]
    assert got.shape == want.shape == (5, 4, 6, 6)
    tolerance = 1e-5 if precision == "float32" else 0.1 * float(np.abs(want).max())
    assert float(np.abs(want - got).max()) < tolerance, f"{precision} TFLite drifted from the ONNX model"


def test_openvino_float16_weights_compute_what_the_onnx_did(conv_onnx: Path, tmp_path: Path) -> None:
    original, ir, x = converted(conv_onnx, tmp_path, to="openvino", precision="float16")
    assert ir.kind == "openvino" and ir.path is not None and ir.path.with_suffix(".bin").is_file()
    want, got = run(original, {"input.1": x})[0], run(ir, {"input.1": x})[0]
    assert float(np.abs(want - got).max()) < 1e-2, "fp16 weights stay close to the float32 ones"


def test_importing_onnx2tf_leaves_the_recursion_limit_alone() -> None:
    """onnx2tf sets the limit to C's INT_MAX on import: kept, deeply nested input anywhere else in the process
    (a crafted JSON header) would overflow the C stack instead of raising RecursionError."""
    probe = (
        "import sys\nfrom passes.convert.deployment import recursion_limit_kept\nbefore = sys.getrecursionlimit()\n"
        "with recursion_limit_kept():\n    import onnx2tf\nprint(before, sys.getrecursionlimit())"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    before, after = done.stdout.split()[-2:]
    assert after == before, f"the recursion limit went from {before} to {after}: {done.stderr[-500:]}"
