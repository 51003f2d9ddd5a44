"""Sensitivity: a quantization below its fidelity floor keeps the responsible nodes in float and tries again,
within the retry budget, and says which nodes and why. Run directly on the probability-map model whose
plain int8 and fp16 collapse (tests/outlier_models.py)."""

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from passes.base import FidelityFloors
from passes.quantize.sensitivity import fold_round_trip_casts, fp16_out_of_range, node_errors
from tests.outlier_models import probability_map, probability_map_inputs
from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.runtime import ModelHandle

FLOORS = FidelityFloors(fp16=0.99, int8=0.98, int4=0.9, generic=0.9, retries=4)
CALIBRATION = "ds_calibration"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelHandle:
    path = probability_map(tmp_path_factory.mktemp("outlier") / "probability_map.onnx")
    return ModelHandle("onnx", ["x"], ["prob"], {"x": [0]}, path=path)


@pytest.fixture(scope="module")
def batches() -> list[dict[str, np.ndarray]]:
    x = probability_map_inputs(64)
    return [{"x": x[:32]}, {"x": x[32:]}]


def _ctx(tmp_path: Path, batches: list[dict[str, np.ndarray]], min_cosine: float | None = None) -> PassContext:
    return PassContext(
        workdir=tmp_path,
        step=0,
        device="cpu",
        example=batches[0],
        datasets={CALIBRATION: {"x": probability_map_inputs(64, seed=2)}},
        evaluation=batches,
        floors=FLOORS,
        min_cosine=min_cosine,
    )


def _quantize(model: ModelHandle, ctx: PassContext, **config: Any) -> dict[str, Any]:
    apply(parse(type="quantize", **config), model, ctx)
    assert ctx.sensitivity is not None, "an int8 or fp16 result is always held to its floor"
    return ctx.sensitivity


def test_dynamic_int8_keeps_the_head_in_float(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    found = _quantize(model, _ctx(tmp_path, batches), method="dynamic")
    assert found["before"] < 0.7, f"plain dynamic int8 should collapse on this model: {found['before']}"
    assert found["met"] and found["after"] >= 0.98 and found["stopped"] is None, found
    kept = [k["node"] for k in found["kept_in_float"]]
    assert kept == ["head/MatMulAddFusion"], f"the projection reading the huge range (fused with its bias): {kept}"
    assert found["kept_in_float"][0]["reason"] == "sensitivity"
    assert len(found["attempts"]) == 2, "one retry was enough"


def test_static_int8_ends_above_the_floor(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    calibration = {"dataset_id": CALIBRATION, "samples": 64}
    found = _quantize(model, _ctx(tmp_path, batches), method="static", calibration=calibration)
    assert found["before"] < 0.98 and found["met"], found
    assert any(k["node"].startswith("head") for k in found["kept_in_float"]), found["kept_in_float"]


def test_fp16_gets_mixed_precision(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, batches)
    found = _quantize(model, ctx, method="fp16")
    assert found["before"] < 0.99 and found["met"] and found["after"] > 0.999, found
    kept = {k["node"]: k for k in found["kept_in_float"]}
    assert set(kept) == {"fc1", "fc1_bias", "head"}, "every node writing or reading the 1e6 activations"
    assert all(k["reason"] == "fp16_range" and "65504" in k["detail"] for k in kept.values())
    graph = onnx.load(str(ctx.path("model.onnx"))).graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer), "the rest is still fp16"


def test_an_unreachable_floor_stops_with_the_best_attempt(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, batches, min_cosine=1.0)
    found = _quantize(model, ctx, method="dynamic")
    assert not found["met"] and found["floor"] == 1.0 and found["floor_source"] == "constraints.min_cosine"
    assert len(found["attempts"]) <= FLOORS.retries + 1, "the retry budget bounds the attempts"
    assert "nothing quantized" in found["stopped"], found["stopped"]
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(ctx.path("model.onnx"))).graph.node), (
        "the search never gives up quantizing to meet a floor only the float model reaches"
    )
    best = max(a["cosine_mean"] for a in found["attempts"])
    assert found["after"] == best, "the best attempt is the one delivered"
    x = batches[0]["x"]
    reference = ort.InferenceSession(str(model.path)).run(None, {"x": x})[0]
    delivered = ort.InferenceSession(str(ctx.path("model.onnx"))).run(None, {"x": x})[0]
    cosine = (reference * delivered).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(delivered, axis=1)
    assert cosine.mean() > 0.98, "the file left behind is the best attempt, not the last one"


def test_node_errors_rank_the_projection_first(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantized = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(model.path), str(quantized))
    ranked = node_errors(onnx.load(str(model.path)), onnx.load(str(quantized)), batches, set())
    assert ranked[0].node == "head", [k.node for k in ranked]
    assert "head" not in [
        k.node for k in node_errors(onnx.load(str(model.path)), onnx.load(str(quantized)), batches, {"head"})
    ]


def test_fp16_range_check_and_cast_folding(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kept = fp16_out_of_range(onnx.load(str(model.path)), batches)
    assert {k.node for k in kept} == {"fc1", "fc1_bias", "head"}
    path = tmp_path / "mixed.onnx"
    blocked = [k.node for k in kept]
    onnx.save(convert_float_to_float16(onnx.load(str(model.path)), keep_io_types=True, node_block_list=blocked), path)
    fold_round_trip_casts(path)
    nodes = onnx.load(str(path)).graph.node
    head = next(n for n in nodes if n.name == "head")
    assert head.input[0] == next(n for n in nodes if n.name == "fc1_bias").output[0], (
        "the 1e6 activations go straight from fc1_bias to head, not through float16"
    )
    assert np.isfinite(ort.InferenceSession(str(path)).run(None, batches[0])[0]).all()


def test_int4_keeps_the_head_in_float(model: ModelHandle, batches: list, tmp_path: Path) -> None:
    found = _quantize(model, _ctx(tmp_path, batches), method="int4", block_size=16)
    assert found["floor"] == 0.9 and found["floor_source"] == "setting FIDELITY_FLOOR_INT4"
    assert found["before"] < 0.9, f"4-bit blocks mixing 1e-6 and 0.5 weights lose the small ones: {found['before']}"
    assert found["met"] and [k["node"] for k in found["kept_in_float"]] == ["head"], found
