"""Each operator the ONNX -> torch converter covers, as a tiny graph built with onnx.helper, in the forms its
opsets give it (axes as attribute or input, Clip's min/max, Split's sizes), compared with onnxruntime on the
conversion's example and on a second feed of other dynamic sizes."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from workers.conversion.onnx_to_torch import ConversionUnsupported, OnnxModule, onnx_to_torch

F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


@dataclass
class Case:
    nodes: list[onnx.NodeProto]
    feed: dict[str, np.ndarray]
    outputs: dict[str, int] = field(default_factory=lambda: {"y": F})
    init: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    other: dict[str, np.ndarray] | None = None
    """a second feed with other sizes on the dynamic axes"""


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], **attrs)


def model_of(case: Case) -> onnx.ModelProto:
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(v.dtype), [f"{name}{i}" for i in range(v.ndim)]
        )
        for name, v in case.feed.items()
    ]
    outputs = [helper.make_tensor_value_info(name, t, None) for name, t in case.outputs.items()]
    initializers = [numpy_helper.from_array(v, name) for name, v in case.init.items()]
    graph = helper.make_graph(case.nodes, "g", inputs, outputs, initializers)
    ir = 7 if case.opset <= 12 else 8 if case.opset <= 18 else 10
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=ir)
    return model


def rnn_weights(gates: int, hidden: int, inputs: int, dirs: int) -> dict[str, np.ndarray]:
    return {
        "W": rand(dirs, gates * hidden, inputs) * 0.5,
        "R": rand(dirs, gates * hidden, hidden) * 0.5,
        "B": rand(dirs, 2 * gates * hidden) * 0.5,
    }


X4 = {"x": rand(2, 3, 8, 8)}
X4_OTHER = {"x": rand(1, 3, 6, 10)}
SEQ = {"x": rand(5, 2, 4)}
SEQ_OTHER = {"x": rand(9, 3, 4)}

CASES: dict[str, Case] = {
    "Slice-steps-axes": Case(
        [node("Slice", ["x", "s", "e", "a", "st"])],
        X4,
        init={"s": i64(1, -1), "e": i64(2**62, -(2**62)), "a": i64(2, 3), "st": i64(2, -2)},
        other=X4_OTHER,
    ),
    "Slice-opset9-attrs": Case([node("Slice", ["x"], starts=[0, 1], ends=[1, 3], axes=[0, 1])], X4, opset=9),
    "Resize-nearest-scales": Case(
        [
            node(
                "Resize",
                ["x", "", "sc"],
                coordinate_transformation_mode="asymmetric",
                mode="nearest",
                nearest_mode="floor",
            )
        ],
        X4,
        init={"sc": np.array([1, 1, 2, 2], np.float32)},
        other=X4_OTHER,
    ),
    "Resize-linear-sizes": Case(
        [node("Resize", ["x", "", "", "sz"], mode="linear", coordinate_transformation_mode="half_pixel")],
        X4,
        init={"sz": i64(2, 3, 13, 5)},
    ),
    "Resize-linear-align-corners": Case(
        [node("Resize", ["x", "", "sc"], mode="linear", coordinate_transformation_mode="align_corners")],
        X4,
        init={"sc": np.array([1, 1, 2, 3], np.float32)},
    ),
    "Resize-cubic": Case(
        [node("Resize", ["x", "", "sc"], mode="cubic", coordinate_transformation_mode="half_pixel")],
        X4,
        init={"sc": np.array([1, 1, 2, 2], np.float32)},
        other=X4_OTHER,
    ),
    "Resize-nearest-half-pixel": Case(
        [node("Resize", ["x", "", "sc"], mode="nearest")], X4, init={"sc": np.array([1, 1, 3, 2], np.float32)}
    ),
    "Resize-linear-asymmetric": Case(
        [node("Resize", ["x", "", "sc"], mode="linear", coordinate_transformation_mode="asymmetric")],
        X4,
        init={"sc": np.array([1, 1, 2, 1.5], np.float32)},
        other=X4_OTHER,
    ),
    "Resize-linear-asymmetric-down": Case(
        [node("Resize", ["x", "", "", "sz"], mode="linear", coordinate_transformation_mode="asymmetric")],
        X4,
        init={"sz": i64(2, 3, 5, 3)},
    ),
    "Resize-nearest-round-floor-scale3": Case(
        [node("Resize", ["x", "", "sc"], mode="nearest", coordinate_transformation_mode="asymmetric")],
        X4,
        init={"sc": np.array([1, 1, 3, 3], np.float32)},
    ),
    "Resize-nearest-tf-half-pixel-down": Case(
        [
            node(
                "Resize",
                ["x", "", "", "sz"],
                mode="nearest",
                coordinate_transformation_mode="tf_half_pixel_for_nn",
                nearest_mode="ceil",
            )
        ],
        X4,
        init={"sz": i64(2, 3, 3, 5)},
    ),
    "Resize-nearest-align-corners-dynamic-sizes": Case(
        [
            node("Shape", ["x"], ["s"]),
            node("Mul", ["s", "two"], ["sz"]),
            node("Slice", ["s", "zero", "two"], ["head"]),
            node("Slice", ["sz", "two", "end"], ["tail"]),
            node("Concat", ["head", "tail"], ["sizes"], axis=0),
            node("Resize", ["x", "", "", "sizes"], mode="nearest", coordinate_transformation_mode="align_corners"),
        ],
        X4,
        init={"two": i64(2), "zero": i64(0), "end": i64(4)},
        other=X4_OTHER,
    ),
    "Upsample-opset9": Case(
        [node("Upsample", ["x", "sc"], mode="nearest")], X4, init={"sc": np.array([1, 1, 2, 2], np.float32)}, opset=9
    ),
    "ConvTranspose-stride-asym-pads": Case(
        [node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[0, 1, 1, 0], output_padding=[1, 1])],
        X4,
        init={"w": rand(3, 4, 3, 3), "b": rand(4)},
        other=X4_OTHER,
    ),
    "ConvTranspose-groups-1d": Case(
        [node("ConvTranspose", ["x", "w"], strides=[2], group=2, pads=[1, 1])],
        {"x": rand(2, 4, 7)},
        init={"w": rand(4, 3, 4)},
    ),
    "Conv-same-upper": Case(
        [node("Conv", ["x", "w", "b"], auto_pad="SAME_UPPER", strides=[2, 2])],
        X4,
        init={"w": rand(5, 3, 3, 3), "b": rand(5)},
        other=X4_OTHER,
    ),
    "Conv-depthwise-pads": Case(
        [node("Conv", ["x", "w"], group=3, pads=[1, 0, 2, 1], dilations=[2, 1])], X4, init={"w": rand(3, 1, 3, 3)}
    ),
    "BatchNormalization": Case(
        [node("BatchNormalization", ["x", "s", "b", "m", "v"])],
        X4,
        init={"s": rand(3), "b": rand(3), "m": rand(3), "v": np.abs(rand(3)) + 0.5},
    ),
    "InstanceNormalization": Case(
        [node("InstanceNormalization", ["x", "s", "b"])], X4, init={"s": rand(3), "b": rand(3)}
    ),
    "HardSigmoid": Case([node("HardSigmoid", ["x"], alpha=0.3, beta=0.4)], X4),
    "HardSwish": Case([node("HardSwish", ["x"])], X4),
    "LeakyRelu": Case([node("LeakyRelu", ["x"], alpha=0.2)], X4),
    "PRelu": Case([node("PRelu", ["x", "s"])], X4, init={"s": rand(3, 1, 1)}),
    "Elu-Selu-Softplus": Case([node("Elu", ["x"], ["a"]), node("Selu", ["a"], ["b"]), node("Softplus", ["b"])], X4),
    "Erf-Sqrt-Abs-Neg": Case(
        [node("Abs", ["x"], ["a"]), node("Sqrt", ["a"], ["b"]), node("Erf", ["b"], ["c"]), node("Neg", ["c"])], X4
    ),
    "Gelu-opset20": Case([node("Gelu", ["x"], approximate="tanh")], X4, opset=20),
    "Reciprocal": Case([node("Abs", ["x"], ["a"]), node("Reciprocal", ["a"])], X4),
    "Sum-Max-Min-broadcast": Case(
        [
            node("Sum", ["x", "b", "c"], ["s"]),
            node("Max", ["s", "b"], ["m"]),
            node("Min", ["m", "c", "x"]),
        ],
        X4,
        init={"b": rand(8), "c": rand(3, 1, 1)},
    ),
    "Equal-Where": Case(
        [node("Equal", ["k", "t"], ["e"]), node("Where", ["e", "x", "z"])],
        {"x": rand(2, 5), "k": RNG.integers(0, 3, (2, 5)).astype(np.int64)},
        init={"t": i64(1), "z": np.zeros(1, np.float32)},
    ),
    "Greater-Not-And-Cast": Case(
        [
            node("Greater", ["x", "z"], ["g"]),
            node("Not", ["g"], ["n"]),
            node("Less", ["x", "z"], ["l"]),
            node("And", ["n", "l"], ["a"]),
            node("Cast", ["a"], to=F),
        ],
        X4,
        init={"z": np.array(0.5, np.float32)},
    ),
    "ArithmeticDivPow": Case(
        [
            node("Add", ["x", "b"], ["a"]),
            node("Mul", ["a", "a"], ["m"]),
            node("Div", ["m", "b"], ["d"]),
            node("Pow", ["d", "two"], ["p"]),
            node("Sub", ["p", "x"]),
        ],
        X4,
        init={"b": np.full((1,), 3.0, np.float32), "two": np.array(2.0, np.float32)},
    ),
    "Clip-opset6-attrs": Case([node("Clip", ["x"], min=-0.5, max=0.7)], X4, opset=6),
    "Clip-opset13-inputs": Case(
        [node("Clip", ["x", "lo", "hi"])], X4, init={"lo": np.array(-0.2, np.float32), "hi": np.array(0.3, np.float32)}
    ),
    "Clip-opset13-max-only": Case([node("Clip", ["x", "", "hi"])], X4, init={"hi": np.array(0.3, np.float32)}),
    "Expand": Case([node("Expand", ["x", "s"])], {"x": rand(3, 1)}, init={"s": i64(2, 1, 4)}, other={"x": rand(5, 1)}),
    "Range-ConstantOfShape": Case(
        [
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "one"], ["n"], axis=0),
            node("Range", ["zero", "n", "one"], ["r"]),
            node("Cast", ["r"], ["rf"], to=F),
            node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
            node("Mul", ["c", "rf"]),
        ],
        {"x": rand(3, 6)},
        init={"zero": np.array(0, np.int64), "one": np.array(1, np.int64)},
        other={"x": rand(2, 9)},
    ),
    "Split-opset13-input": Case(
        [node("Split", ["x", "sp"], ["a", "b"], axis=3)],
        X4,
        outputs={"a": F, "b": F},
        init={"sp": i64(3, 5)},
    ),
    "Split-opset11-attr": Case(
        [node("Split", ["x"], ["a", "b"], axis=2, split=[2, 6])], X4, outputs={"a": F, "b": F}, opset=11
    ),
    "Split-opset18-num-outputs": Case(
        [node("Split", ["x"], ["a", "b", "c"], axis=3, num_outputs=3)],
        X4,
        outputs={"a": F, "b": F, "c": F},
        opset=18,
        other=X4_OTHER,
    ),
    "Concat": Case([node("Concat", ["x", "x"], axis=1)], X4, other=X4_OTHER),
    "ReduceMax-opset13-attr": Case([node("ReduceMax", ["x"], axes=[1, 3], keepdims=0)], X4, opset=13),
    "ReduceMax-opset18-input": Case([node("ReduceMax", ["x", "a"])], X4, init={"a": i64(-1)}, opset=18),
    "ReduceSum-opset11-attr": Case([node("ReduceSum", ["x"], axes=[2])], X4, opset=11),
    "ReduceSum-opset13-input": Case([node("ReduceSum", ["x", "a"], keepdims=0)], X4, init={"a": i64(1, 2)}),
    "ReduceSum-all": Case([node("ReduceSum", ["x"])], X4),
    "ReduceMean-opset13-attr": Case([node("ReduceMean", ["x"], axes=[-1])], X4, opset=13, other=X4_OTHER),
    "ReduceMean-opset18-input": Case([node("ReduceMean", ["x", "a"], keepdims=0)], X4, init={"a": i64(2, 3)}, opset=18),
    "ReduceMin-L2-Prod": Case(
        [
            node("ReduceMin", ["x"], ["a"], axes=[1]),
            node("ReduceL2", ["a"], ["b"], axes=[2]),
            node("ReduceProd", ["b"], axes=[3]),
        ],
        X4,
        opset=13,
    ),
    "GlobalMaxPool": Case([node("GlobalMaxPool", ["x"])], X4, other=X4_OTHER),
    "GlobalAveragePool": Case([node("GlobalAveragePool", ["x"])], X4, other=X4_OTHER),
    "MaxPool-pads-ceil": Case(
        [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)], X4
    ),
    "MaxPool-same-upper": Case(
        [node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")], X4_OTHER, other=X4
    ),
    "AveragePool": Case([node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], X4),
    "Pad-opset11-constant": Case(
        [node("Pad", ["x", "p", "v"])], X4, init={"p": i64(0, 0, 1, 2, 0, 0, 3, 0), "v": np.array(1.5, np.float32)}
    ),
    "Pad-opset2-attrs": Case([node("Pad", ["x"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.5)], X4, opset=10),
    "Pad-reflect": Case([node("Pad", ["x", "p"], mode="reflect")], X4, init={"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}),
    "Pad-edge": Case([node("Pad", ["x", "p"], mode="edge")], X4, init={"p": i64(0, 0, 1, 1, 0, 0, 1, 1)}),
    "Tile": Case([node("Tile", ["x", "r"])], X4, init={"r": i64(1, 2, 1, 3)}, other=X4_OTHER),
    "Gather-axis1-negative": Case([node("Gather", ["x", "i"], axis=1)], X4, init={"i": i64(-1, 0, 2)}),
    "Gather-scalar-index": Case([node("Gather", ["x", "i"], axis=0)], X4, init={"i": np.array(1, np.int64)}),
    "Gather-embedding": Case(
        [node("Gather", ["table", "ids"])],
        {"ids": RNG.integers(0, 10, (2, 5)).astype(np.int64)},
        init={"table": rand(10, 4)},
        other={"ids": RNG.integers(0, 10, (3, 7)).astype(np.int64)},
    ),
    "GatherElements": Case(
        [node("GatherElements", ["x", "i"], axis=1)],
        {"x": rand(3, 4)},
        init={"i": np.array([[0, 3], [1, 1], [2, 0]], np.int64)},
    ),
    "Unsqueeze-Squeeze-opset11-attrs": Case(
        [node("Unsqueeze", ["x"], ["u"], axes=[0, -1]), node("Squeeze", ["u"], axes=[0])], X4, opset=11
    ),
    "Unsqueeze-Squeeze-opset13-inputs": Case(
        [node("Unsqueeze", ["x", "a"], ["u"]), node("Squeeze", ["u", "b"])],
        X4,
        init={"a": i64(1, 5), "b": i64(5)},
        other=X4_OTHER,
    ),
    "Squeeze-no-axes": Case([node("Squeeze", ["x"])], {"x": rand(2, 1, 3, 1)}),
    "Cast-to-int": Case([node("Cast", ["x"], to=I64)], X4, outputs={"y": I64}),
    "Shape-start-end": Case([node("Shape", ["x"], start=1, end=3)], X4, outputs={"y": I64}, opset=15, other=X4_OTHER),
    "Shape-Reshape-dynamic": Case(
        [
            node("Shape", ["x"], ["s"]),
            node("Slice", ["s", "z", "two"], ["head"]),
            node("Concat", ["head", "m1"], ["t"], axis=0),
            node("Reshape", ["x", "t"]),
        ],
        X4,
        init={"z": i64(0), "two": i64(2), "m1": i64(-1)},
        other=X4_OTHER,
    ),
    "ReduceProd-Floor-on-shape": Case(
        [
            node("Shape", ["x"], ["s"]),
            node("Slice", ["s", "one", "end"], ["rest"]),
            node("ReduceProd", ["rest"], ["n"], keepdims=1),
            node("Cast", ["n"], ["nf"], to=F),
            node("Div", ["nf", "two"], ["half"]),
            node("Floor", ["half"], ["fl"]),
            node("Cast", ["fl"], ["h"], to=I64),
            node("Concat", ["first", "h", "m1"], ["t"], axis=0),
            node("Reshape", ["x", "t"]),
        ],
        {"x": rand(2, 4, 6)},
        init={"one": i64(1), "end": i64(3), "two": np.array([2.0], np.float32), "first": i64(0), "m1": i64(-1)},
        other={"x": rand(3, 2, 8)},
        opset=13,
    ),
    "TopK": Case([node("TopK", ["x", "k"], ["v", "i"], axis=-1)], X4, outputs={"v": F, "i": I64}, init={"k": i64(3)}),
    "TopK-smallest-axis1": Case(
        [node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=0)], X4, outputs={"v": F, "i": I64}, init={"k": i64(2)}
    ),
    "ArgMax": Case([node("ArgMax", ["x"], axis=1, keepdims=0)], X4, outputs={"y": I64}, other=X4_OTHER),
    "ArgMin-keepdims": Case([node("ArgMin", ["x"], axis=-1)], X4, outputs={"y": I64}),
    "MatMul-Add-into-Linear": Case(
        [node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "b"])],
        {"x": rand(2, 5, 6)},
        init={"w": rand(6, 4), "b": rand(4)},
        other={"x": rand(3, 2, 6)},
    ),
    "MatMul-two-inputs": Case([node("MatMul", ["x", "x2"])], {"x": rand(2, 3, 4), "x2": rand(2, 4, 5)}),
    "Gemm-transB": Case(
        [node("Gemm", ["x", "w", "b"], transB=1, alpha=0.5, beta=2.0)],
        {"x": rand(3, 6)},
        init={"w": rand(4, 6), "b": rand(4)},
        other={"x": rand(7, 6)},
    ),
    "Gemm-transA-input": Case([node("Gemm", ["x", "x2"], transA=1)], {"x": rand(6, 3), "x2": rand(6, 2)}),
    "LayerNormalization": Case(
        [node("LayerNormalization", ["x", "s", "b"], axis=-1, epsilon=1e-5)],
        {"x": rand(2, 5, 8)},
        init={"s": rand(8), "b": rand(8)},
        other={"x": rand(1, 9, 8)},
    ),
    "LayerNormalization-axis-no-bias": Case(
        [node("LayerNormalization", ["x", "s"], axis=-2)], {"x": rand(2, 5, 8)}, init={"s": rand(5, 8)}
    ),
    "Softmax-opset13": Case([node("Softmax", ["x"], axis=1)], X4),
    "Softmax-opset11-coerced": Case([node("Softmax", ["x"], axis=2)], X4, opset=11),
    "LogSoftmax": Case([node("LogSoftmax", ["x"])], X4),
    "Flatten-Transpose": Case(
        [node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), node("Flatten", ["t"], axis=2)], X4, other=X4_OTHER
    ),
    "DepthToSpace-DCR": Case([node("DepthToSpace", ["x"], blocksize=2)], {"x": rand(1, 8, 3, 3)}),
    "DepthToSpace-CRD": Case([node("DepthToSpace", ["x"], blocksize=2, mode="CRD")], {"x": rand(1, 8, 3, 3)}),
    "LRN": Case([node("LRN", ["x"], size=3, alpha=1e-3, beta=0.7, bias=2.0)], X4, other=X4_OTHER),
    "Einsum": Case(
        [node("Einsum", ["x", "x2"], equation="bij, bkj -> bik")], {"x": rand(2, 3, 4), "x2": rand(2, 5, 4)}
    ),
    "CumSum-exclusive-reverse": Case(
        [node("CumSum", ["x", "a"], exclusive=1, reverse=1)], X4, init={"a": np.array(2, np.int64)}
    ),
    "Trilu-lower-k": Case(
        [node("Trilu", ["x", "k"], upper=0)], {"x": rand(2, 4, 5)}, init={"k": np.array(1, np.int64)}
    ),
    "Trilu-upper": Case([node("Trilu", ["x"])], {"x": rand(4, 5)}),
    "Reshape-merge-leading-axes-example-batch-1": Case(
        [node("Reshape", ["x", "s"])], {"x": rand(5, 1, 4)}, init={"s": i64(-1, 4)}, other={"x": rand(3, 2, 4)}
    ),
    "Reshape-flatten-example-batch-1": Case(
        [node("Reshape", ["x", "s"])], {"x": rand(1, 4, 1, 1)}, init={"s": i64(-1, 4)}, other={"x": rand(3, 4, 1, 1)}
    ),
    "Constant-value-ints": Case(
        [helper.make_node("Constant", [], ["s"], value_ints=[0, -1]), node("Reshape", ["x", "s"])], X4
    ),
    "Attention-reshapes": Case(
        [
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "zero"], ["b"], axis=0),
            node("Gather", ["s", "one"], ["t"], axis=0),
            node("Unsqueeze", ["b", "ax"], ["b1"]),
            node("Unsqueeze", ["t", "ax"], ["t1"]),
            node("Concat", ["b1", "t1", "heads", "dim"], ["shape4"], axis=0),
            node("MatMul", ["x", "wq"], ["q"]),
            node("Reshape", ["q", "shape4"], ["q4"]),
            node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
            node("Transpose", ["q4"], ["kh"], perm=[0, 2, 3, 1]),
            node("MatMul", ["qh", "kh"], ["scores"]),
            node("Div", ["scores", "scale"], ["scaled"]),
            node("Softmax", ["scaled"], ["p"], axis=-1),
            node("MatMul", ["p", "qh"], ["ctx"]),
            node("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]),
            node("Concat", ["b1", "t1", "m1"], ["shape3"], axis=0),
            node("Reshape", ["ctxt", "shape3"]),
        ],
        {"x": rand(2, 5, 8)},
        init={
            "zero": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "ax": i64(0),
            "heads": i64(2),
            "dim": i64(4),
            "m1": i64(-1),
            "wq": rand(8, 8),
            "scale": np.array(2.0, np.float32),
        },
        other={"x": rand(3, 7, 8)},
    ),
    "LSTM-bidirectional-initial-state": Case(
        [
            node(
                "LSTM",
                ["x", "W", "R", "B", "", "h0", "c0"],
                ["Y", "Yh", "Yc"],
                hidden_size=3,
                direction="bidirectional",
            )
        ],
        {**SEQ, "h0": rand(2, 2, 3), "c0": rand(2, 2, 3)},
        outputs={"Y": F, "Yh": F, "Yc": F},
        init=rnn_weights(4, 3, 4, 2),
        other={"x": rand(9, 2, 4), "h0": rand(2, 2, 3), "c0": rand(2, 2, 3)},
    ),
    "LSTM-forward-Y-only": Case(
        [node("LSTM", ["x", "W", "R", "B"], ["Y"], hidden_size=3)],
        SEQ,
        outputs={"Y": F},
        init=rnn_weights(4, 3, 4, 1),
        other=SEQ_OTHER,
    ),
    "GRU-forward": Case(
        [node("GRU", ["x", "W", "R", "B"], ["Y", "Yh"], hidden_size=3, linear_before_reset=1)],
        SEQ,
        outputs={"Y": F, "Yh": F},
        init=rnn_weights(3, 3, 4, 1),
        other=SEQ_OTHER,
    ),
    "GRU-reverse": Case(
        [node("GRU", ["x", "W", "R", "B"], ["Y", "Yh"], hidden_size=3, linear_before_reset=1, direction="reverse")],
        SEQ,
        outputs={"Y": F, "Yh": F},
        init=rnn_weights(3, 3, 4, 1),
        other=SEQ_OTHER,
    ),
    "GRU-bidirectional": Case(
        [
            node(
                "GRU",
                ["x", "W", "R", "B"],
                ["Y", "Yh"],
                hidden_size=3,
                linear_before_reset=1,
                direction="bidirectional",
            )
        ],
        SEQ,
        outputs={"Y": F, "Yh": F},
        init=rnn_weights(3, 3, 4, 2),
        other=SEQ_OTHER,
    ),
    "RNN-tanh": Case(
        [node("RNN", ["x", "W", "R", "B"], ["Y", "Yh"], hidden_size=3)],
        SEQ,
        outputs={"Y": F, "Yh": F},
        init=rnn_weights(1, 3, 4, 1),
        other=SEQ_OTHER,
    ),
}


def _run_both(model: onnx.ModelProto, module: OnnxModule, feed: dict[str, np.ndarray], outputs: list[str]) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(outputs, feed)
    with torch.no_grad():
        got = module(*[torch.from_numpy(feed[n]) for n in module.input_names])
    for name, want, have in zip(outputs, expected, list(got) if isinstance(got, tuple) else [got], strict=True):
        have = np.asarray(have.numpy() if isinstance(have, torch.Tensor) else have)
        assert have.shape == want.shape, f"{name}: shape {have.shape}, onnxruntime gives {want.shape}"
        assert have.dtype == want.dtype or want.dtype.kind == have.dtype.kind, f"{name}: dtype {have.dtype}"
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4, err_msg=f"{name} differs from onnxruntime")


@pytest.mark.parametrize("name", list(CASES))
def test_operator_matches_onnxruntime(name: str) -> None:
    case = CASES[name]
    model = model_of(case)
    module = onnx_to_torch(model, case.feed)
    _run_both(model, module, case.feed, list(case.outputs))
    if case.other is not None:
        _run_both(model, module, case.other, list(case.outputs))


@pytest.mark.parametrize(
    ("case", "named"),
    [
        (
            Case(
                [node("GRU", ["x", "W", "R", "B"], ["Y"], hidden_size=3)],
                SEQ,
                outputs={"Y": F},
                init=rnn_weights(3, 3, 4, 1),
            ),
            "GRU (linear_before_reset=0",
        ),
        (
            Case(
                [node("Resize", ["x", "", "sc"], mode="cubic", coordinate_transformation_mode="asymmetric")],
                X4,
                init={"sc": np.array([1, 1, 2, 2], np.float32)},
            ),
            "Resize (mode cubic with asymmetric)",
        ),
        (
            Case(
                [node("Resize", ["x", "", "sc"], mode="nearest")], X4, init={"sc": np.array([2, 1, 2, 2], np.float32)}
            ),
            "Resize (scales on the batch or channel axis)",
        ),
        (Case([node("Conv", ["x", "x"])], X4), "Conv (weights not constant)"),
        (Case([node("Det", ["x"])], X4), "Det"),
    ],
    ids=["gru-reset-before", "resize-asymmetric-cubic", "resize-batch-axis", "conv-input-weights", "det"],
)
def test_form_not_covered_is_named(case: Case, named: str) -> None:
    with pytest.raises(ConversionUnsupported) as info:
        onnx_to_torch(model_of(case), case.feed)
    assert any(op.startswith(named) for op in info.value.ops), f"the refusal names {info.value.ops}, not {named!r}"


def test_constant_node_weights_become_layers() -> None:
    """Paddle2ONNX writes weights as Constant nodes: they still become a real Conv2d holding them."""
    weight = numpy_helper.from_array(rand(4, 3, 3, 3), "w")
    case = Case(
        [helper.make_node("Constant", [], ["w"], value=weight), node("Conv", ["x", "w"], pads=[1, 1, 1, 1])], X4
    )
    model = model_of(case)
    module = onnx_to_torch(model, case.feed)
    assert [type(m).__name__ for m in module.layers.values()] == ["Conv2d"], "the Constant weight is not a layer"
    _run_both(model, module, X4_OTHER, ["y"])


def test_weights_computed_from_constants_become_layers() -> None:
    """An Identity (shared weights) or a Transpose of an initializer is computed at conversion, so the Conv and
    the MatMul it feeds are still real layers."""
    case = Case(
        [
            node("Identity", ["w"], ["w_shared"]),
            node("Conv", ["x", "w_shared"], ["c"]),
            node("GlobalAveragePool", ["c"], ["g"]),
            node("Flatten", ["g"], ["f"]),
            node("Transpose", ["m"], ["m_t"], perm=[1, 0]),
            node("MatMul", ["f", "m_t"]),
        ],
        X4,
        init={"w": rand(4, 3, 3, 3), "m": rand(5, 4)},
    )
    model = model_of(case)
    module = onnx_to_torch(model, case.feed)
    kinds = [type(m).__name__ for m in module.layers.values()]
    assert kinds == ["Conv2d", "Linear"], f"weights behind Identity / Transpose are not layers: {kinds}"
    _run_both(model, module, X4_OTHER, ["y"])


def test_ir3_initializers_listed_as_inputs_are_weights() -> None:
    """Old exporters (IR 3, opset 9) list every initializer among the graph inputs too."""
    weight, bias = rand(6, 3), rand(6)
    graph = helper.make_graph(
        [node("Gemm", ["x", "w", "b"], transB=1)],
        "g",
        [
            helper.make_tensor_value_info("x", F, ["n", 3]),
            helper.make_tensor_value_info("w", F, [6, 3]),
            helper.make_tensor_value_info("b", F, [6]),
        ],
        [helper.make_tensor_value_info("y", F, ["n", 6])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    module = onnx_to_torch(model, {"x": rand(2, 3)})
    assert module.input_names == ["x"], f"the converted model asks for {module.input_names}"
    _run_both(model, module, {"x": rand(5, 3)}, ["y"])
