"""The weightless ONNX reader: the skeleton is the model with tensor data left out, and nothing else."""

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.services.onnx_skeleton import SkeletonError, read_skeleton


def _model() -> onnx.ModelProto:
    """Tensor data in every place ONNX keeps it: initializers, a Constant's attribute, a subgraph, a sparse tensor."""
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    typed = helper.make_tensor("typed", TensorProto.INT64, [3], [1, 2, 3])
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(4, np.float32), "cv"))
    branch = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["out_b"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out_b", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.zeros(4, np.float32), "b")],
    )
    cond = helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0], np.float32), "sv"), numpy_helper.from_array(np.array([1]), "si"), [4]
    )
    graph = helper.make_graph(
        [const, cond, helper.make_node("MatMul", ["x", "w"], ["z"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
        [weight, typed],
        doc_string="kept as it is",
        sparse_initializer=[sparse],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _without_data(model: onnx.ModelProto) -> onnx.ModelProto:
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    g = stripped.graph
    tensors = [
        *g.initializer,
        g.node[0].attribute[0].t,
        g.sparse_initializer[0].values,
        g.sparse_initializer[0].indices,
    ]
    tensors += [t for attr in g.node[1].attribute for t in attr.g.initializer]
    for tensor in tensors:
        for name in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
            tensor.ClearField(name)
    return stripped


def test_the_skeleton_is_the_model_without_tensor_data() -> None:
    model = _model()
    data = model.SerializeToString()
    skeleton = read_skeleton(io.BytesIO(data), len(data))
    assert skeleton.model == _without_data(model), "the skeleton differs from the model beyond its tensor data"


def test_the_raw_data_lengths_are_noted_per_tensor() -> None:
    data = _model().SerializeToString()
    lengths = {tensor.name: held for tensor, held in read_skeleton(io.BytesIO(data), len(data)).raw_lengths}
    assert lengths == {"w": 48, "cv": 16, "b": 16, "sv": 4, "si": 8}, f"raw_data lengths noted: {lengths}"


def test_a_truncated_file_is_malformed_not_a_smaller_model() -> None:
    data = _model().SerializeToString()
    with pytest.raises(SkeletonError):
        read_skeleton(io.BytesIO(data[:-7]), len(data) - 7)
