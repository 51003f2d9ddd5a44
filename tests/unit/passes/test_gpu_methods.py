"""The GPU methods' parts that a CPU can check: their layers' arithmetic (fp8 e4m3 scaling, int8 per channel,
int4 groups in tinygemm's convention, the 2:4 mask), their place in a plan, and the clear failure of a GPU pass
that reaches a worker without a GPU. Their kernels run in tests/gpu."""

from pathlib import Path

import numpy as np
import pytest
import torch

from app.schemas.errors import JobErrorCode
from passes.prune.semi_structured.run import two_of_four
from passes.quantize.fp8.run import Fp8Linear
from passes.quantize.weight_only.run import Int8WeightOnlyLinear, int4_groups
from tests.pass_runs import apply, parse
from tests.unit.passes.test_planner import steps
from workers.context import PassContext
from workers.runtime import ModelHandle, PassFailed


@pytest.fixture(scope="module")
def layer() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(256, 64)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(
        torch.nn.functional.cosine_similarity(a.detach().float().flatten(), b.detach().float().flatten(), dim=0)
    )


@pytest.mark.parametrize("per_row", [True, False])
def test_fp8_layer_computes_the_linear(layer: torch.nn.Linear, per_row: bool) -> None:
    x = torch.randn(3, 5, 256)
    got = Fp8Linear(layer, per_row)(x.bfloat16())
    assert got.shape == (3, 5, 64) and got.dtype == torch.bfloat16
    assert _cosine(got, layer(x)) > 0.998, "e4m3 with amax scaling keeps the product"


def test_int8_weight_only_layer_computes_the_linear(layer: torch.nn.Linear) -> None:
    quantized = Int8WeightOnlyLinear(layer)
    assert quantized.weight.dtype == torch.int8 and quantized.weight.element_size() == 1
    x = torch.randn(4, 256)
    assert _cosine(quantized(x.bfloat16()), layer(x)) > 0.999


def test_int4_groups_follow_tinygemms_convention(layer: torch.nn.Linear) -> None:
    codes, scales, zeros = int4_groups(layer.weight.detach(), 64)
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15 and scales.shape == zeros.shape == (64, 4)
    restored = ((codes.float().reshape(64, 4, 64) - 8) * scales[..., None] + zeros[..., None]).reshape(64, 256)
    error = float((restored - layer.weight).abs().max())
    assert error <= float(scales.max()) / 2 + 1e-6, "each weight is within half a step of its group's grid"


def test_two_of_four_keeps_the_two_largest_of_each_group() -> None:
    score = torch.tensor([[0.1, 0.9, 0.5, 0.2, 3.0, 1.0, 2.0, 0.0]])
    assert two_of_four(score).tolist() == [[False, True, True, False, True, False, True, False]]


@pytest.mark.parametrize(
    "config",
    [
        {"type": "quantize", "method": "fp8"},
        {"type": "quantize", "method": "int4_weight_only"},
        {"type": "prune", "method": "semi_structured_2_4"},
    ],
)
def test_a_gpu_method_ends_as_a_pt2(config: dict) -> None:
    assert steps([config], "hf_folder")[-1] == "convert (auto)"
    assert steps([config, {"type": "convert", "to": "pt2"}], "hf_folder")[-1] == "convert"


def test_a_gpu_pass_on_a_worker_without_a_gpu_fails_clearly(layer: torch.nn.Linear, tmp_path: Path) -> None:
    handle = ModelHandle("torch", ["x"], ["y"], {"x": [0]}, module=torch.nn.Sequential(layer))
    ctx = PassContext(workdir=tmp_path, step=0, device="cpu", example={"x": np.zeros((2, 256), np.float32)})
    with pytest.raises(PassFailed) as info:
        apply(parse(type="quantize", method="fp8"), handle, ctx)
    assert info.value.code == JobErrorCode.gpu_unavailable
    assert "--queues gpu" in info.value.message, info.value.message
