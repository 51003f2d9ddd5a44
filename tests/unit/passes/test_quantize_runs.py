"""The ONNX quantization methods run directly (no server) on graphs that used to break them: int4 on an
older opset whose operators change at opset 21, optimize then dynamic int8 through the fusions, and a
written graph onnxruntime cannot load, which is refused with a code instead of handed on."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.schemas.errors import JobErrorCode
from passes.quantize.run import check_loads
from tests.compat.corpus import Encoder, dynamo_export
from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.runtime import ModelHandle, PassFailed


def _reduce_then_matmul(path: Path) -> Path:
    """Opset 13: ReduceMean with its `axes` attribute (an input from opset 18 on), then a MatMul."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32), "w")
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _ctx(tmp_path: Path, example: dict[str, np.ndarray]) -> PassContext:
    return PassContext(workdir=tmp_path, step=0, device="cpu", example=example)


def test_int4_on_an_older_opset_writes_a_graph_that_loads(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((3, 4, 32)).astype(np.float32)
    handle = ModelHandle("onnx", ["x"], ["y"], {"x": [0]}, path=_reduce_then_matmul(tmp_path / "m.onnx"))
    result = apply(parse(type="quantize", method="int4"), handle, _ctx(tmp_path, {"x": x}))
    model = onnx.load(str(result.path))
    assert "MatMulNBits" in {n.op_type for n in model.graph.node}, "the MatMul is 4-bit"
    out = ort.InferenceSession(str(result.path)).run(None, {"x": x})[0]
    assert out.shape == (3, 16), "the artifact loads with default session options and runs"


def test_optimize_then_dynamic_int8_quantizes_the_fused_encoder(tmp_path: Path) -> None:
    import torch

    x = np.random.default_rng(2).standard_normal((2, 10, 32)).astype(np.float32)
    shapes = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},)
    path = dynamo_export(Encoder(), (torch.from_numpy(x),), tmp_path / "enc.onnx", 18, ["x"], ["h"], shapes)
    ctx = _ctx(tmp_path, {"x": x})
    optimized = apply(parse(type="optimize"), ModelHandle("onnx", ["x"], ["h"], {"x": [0, 1]}, path=path), ctx)
    ctx.step = 1
    result = apply(parse(type="quantize", method="dynamic"), optimized, ctx)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, f"int8 MatMuls after the fusions: {ops}"


def test_a_graph_onnxruntime_cannot_load_is_refused_with_a_code(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], bogus=1)  # an attribute Relu does not have
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(PassFailed) as refused:
        check_loads(path, "quantize static")
    assert refused.value.code == JobErrorCode.quantization_failed
    assert "nodes_to_exclude" in refused.value.message, "the message says what to do instead"
