"""The compatibility corpus: small ONNX models written the ways real exporters write them, built here in
seconds (nothing downloads). Each stands for a pattern third-party models bring: torch's dynamo and
TorchScript exporters at opsets 11 to 18, Paddle2ONNX's Constant-node weights and `?` dimensions, IR-3 /
opset-9 graphs listing their initializers as inputs, tf2onnx's NHWC layout behind Transposes, recurrent
recognisers with a dynamic width, detectors with Resize / ConvTranspose heads and a sigmoid map, integer
inputs, several inputs and outputs, and a transformer encoder. The classifiers are trained (on
scikit-learn's digits) so their accuracy means something; the others keep their seeded initial weights,
which is enough for fidelity to the original.

tf2onnx itself is not a dependency: tensorflow-cpu would add a second large framework with its own numpy
and protobuf pins to the test environment, so `tf2onnx_style` is the graph tf2onnx writes for a small Keras
CNN, built with onnx.helper."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from workers.examples import Digits, digits_split, train_digits_cnn

SAMPLES = 32


@dataclass(frozen=True)
class CorpusModel:
    name: str
    pattern: str
    """what it stands for, as the matrix prints it"""
    path: Path
    data: dict[str, np.ndarray]
    """SAMPLES samples of every input (plus `labels` for a trained classifier): calibration and evaluation"""
    opset: int = field(default=0)


def torchscript_export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
) -> Path:
    torch.onnx.export(
        module.eval(),
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        opset_version=opset,
        dynamo=False,
        dynamic_axes=axes,
    )
    return path


def dynamo_export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    inputs: list[str],
    outputs: list[str],
    shapes: tuple[dict[int, Any], ...],
) -> Path:
    torch.onnx.export(
        module.eval(),
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        opset_version=opset,
        dynamo=True,
        external_data=False,
        dynamic_shapes=shapes,
        verbose=False,
    )
    return path


def _batch() -> dict[int, Any]:
    return {0: torch.export.Dim("batch")}


def train_mlp(digits: Digits, epochs: int = 150) -> torch.nn.Module:
    """A 64-64-10 MLP on the flattened digits, full-batch Adam (about 95% test accuracy, a second)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(digits.x_train.reshape(-1, 64)), torch.from_numpy(digits.y_train)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def constants_for_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer written as a Constant node instead, as Paddle2ONNX writes weights."""
    constants = [helper.make_node("Constant", [], [init.name], value=init) for init in model.graph.initializer]
    del model.graph.initializer[:]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(constants + nodes)
    return model


def unnamed_dims(model: onnx.ModelProto, marker: str = "?") -> onnx.ModelProto:
    """Every dynamic dimension of the inputs and outputs renamed to `marker`, as Paddle2ONNX writes them."""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_param = marker
    return model


def _weights(rng: np.random.Generator, name: str, *shape: int) -> TensorProto:
    scale = 1 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


class Detector(torch.nn.Module):
    """A strided backbone, a ConvTranspose + Resize head ending in a sigmoid probability map, a box head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        self.up = torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.prob = torch.nn.Conv2d(8, 1, 1)
        self.boxes = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        up = torch.nn.functional.interpolate(torch.relu(self.up(features)), scale_factor=2.0, mode="bilinear")
        return torch.sigmoid(self.prob(up)), self.boxes(features)


class Recogniser(torch.nn.Module):
    """A text-line recogniser: conv features pooled over the height, a GRU along the width, a class per
    column (CRNN-style, as OCR models are)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.gru = torch.nn.GRU(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = torch.relu(self.conv(x)).mean(dim=2).permute(0, 2, 1)
        return self.head(self.gru(columns)[0]).log_softmax(-1)


class Tokens(torch.nn.Module):
    """Token ids (int64) and segment ids (int32) embedded, mean-pooled and classified."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(50, 16)
        self.segments = torch.nn.Embedding(2, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        return self.head((self.tokens(ids) + self.segments(segments.long())).mean(1))


class TwoHeads(torch.nn.Module):
    """Two inputs of different widths, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(4, 16)
        self.score = torch.nn.Linear(32, 3)
        self.embed = torch.nn.Linear(32, 6)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([torch.relu(self.a(a)), torch.tanh(self.b(b))], dim=1)
        return self.score(joint), self.embed(joint)


def train_two_heads(steps: int = 300) -> TwoHeads:
    """TwoHeads fitted to two fixed functions of its inputs (a class score from both, an embedding of a), so its
    outputs carry signal as a real model's do: an untrained one's are small random projections, where int8's
    error is a large share (static int8 cosine 0.94 to 0.96 on them, depending on the initial draw)."""
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    a, b = torch.randn(512, 8), torch.randn(512, 4)
    score = torch.stack([a[:, 0] + b[:, 0], a[:, 1] - a[:, 2], torch.tanh(b[:, 1] * 2)], dim=1)
    embed = torch.relu(a[:, :6]) - 0.5 * torch.tanh(b[:, 2:3])
    for _ in range(steps):
        optimizer.zero_grad()
        got_score, got_embed = model(a, b)
        (torch.nn.functional.mse_loss(got_score, score) + torch.nn.functional.mse_loss(got_embed, embed)).backward()
        optimizer.step()
    return model.eval()


class Encoder(torch.nn.Module):
    """One pre-norm transformer encoder block (attention, GELU feed-forward, LayerNorm) and a pooled head."""

    def __init__(self, width: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.ff = torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.GELU(), torch.nn.Linear(64, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / (w // self.heads) ** 0.5, dim=-1)
        x = x + self.out((attention @ v).transpose(1, 2).reshape(b, s, w))
        return x + self.ff(self.norm2(x))


class Pooled(torch.nn.Module):
    """A CNN taking any height and width (global average pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def ir3_opset9(path: Path) -> Path:
    """A Caffe2-era graph: IR 3, opset 9, every initializer also a graph input, a Reshape to a stored shape."""
    rng = np.random.default_rng(1)
    inits = [
        _weights(rng, "conv_w", 8, 1, 3, 3),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "__SHAPE"),
        _weights(rng, "fc_w", 10, 512),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "__SHAPE"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    listed = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    prob = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(nodes, "caffe2_net", [x, *listed], [prob], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="caffe2")
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def tf2onnx_style(path: Path) -> Path:
    """What tf2onnx writes for a small Keras CNN: NHWC input, Transposes around the Conv, `unk__` batch
    dimension, a MatMul + Add dense layer, opset 13."""
    rng = np.random.default_rng(2)
    inits = [
        _weights(rng, "conv2d/kernel", 8, 1, 3, 3),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv2d/bias"),
        numpy_helper.from_array(np.array([-1, 512], np.int64), "flatten/Const"),
        _weights(rng, "dense/kernel", 512, 64),
        numpy_helper.from_array(np.zeros(64, np.float32), "dense/bias"),
        _weights(rng, "dense_1/kernel", 64, 10),
        numpy_helper.from_array(np.zeros(10, np.float32), "dense_1/bias"),
    ]
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv2d/kernel", "conv2d/bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Transpose", ["r"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "flatten/Const"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense/kernel"], ["d0"]),
        helper.make_node("Add", ["d0", "dense/bias"], ["d1"]),
        helper.make_node("Relu", ["d1"], ["d2"]),
        helper.make_node("MatMul", ["d2", "dense_1/kernel"], ["d3"]),
        helper.make_node("Add", ["d3", "dense_1/bias"], ["d4"]),
        helper.make_node("Softmax", ["d4"], ["dense_1"], axis=-1),
    ]
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__6", 8, 8, 1])
    y = helper.make_tensor_value_info("dense_1", TensorProto.FLOAT, ["unk__7", 10])
    graph = helper.make_graph(nodes, "tf2onnx", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def build_corpus(folder: Path) -> list[CorpusModel]:
    """Every corpus model written under `folder`, with its data (about 10 seconds on one core)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    digits = digits_split()
    images, labels = digits.x_test[:SAMPLES], digits.y_test[:SAMPLES]
    mlp, cnn = train_mlp(digits), train_digits_cnn(digits, epochs=3)
    flat = {"x": images.reshape(SAMPLES, 64), "labels": labels}
    two = (torch.randn(2, 8), torch.randn(2, 4))
    builders: list[tuple[str, str, int, Callable[[Path], Path], dict[str, np.ndarray]]] = [
        (
            "mlp_dynamo18",
            "trained MLP, dynamo exporter",
            18,
            lambda p: dynamo_export(mlp, (torch.zeros(2, 64),), p, 18, ["x"], ["logits"], (_batch(),)),
            flat,
        ),
        (
            "cnn_torchscript11",
            "trained CNN, TorchScript exporter",
            11,
            lambda p: torchscript_export(
                cnn, (torch.zeros(2, 1, 8, 8),), p, 11, ["x"], ["logits"], {"x": {0: "batch"}}
            ),
            {"x": images, "labels": labels},
        ),
        (
            "cnn_dynamo17",
            "trained CNN, dynamo exporter",
            17,
            lambda p: dynamo_export(cnn, (torch.zeros(2, 1, 8, 8),), p, 17, ["x"], ["logits"], (_batch(),)),
            {"x": images, "labels": labels},
        ),
        (
            "constant_weights13",
            "weights as Constant nodes (Paddle2ONNX)",
            13,
            lambda p: _rewrite(
                torchscript_export(mlp, (torch.zeros(2, 64),), p, 13, ["x"], ["logits"], {"x": {0: "batch"}}),
                constants_for_initializers,
            ),
            flat,
        ),
        ("ir3_opset9", "IR 3 / opset 9, initializers as inputs", 9, ir3_opset9, {"x": images}),
        (
            "gru_recogniser14",
            "GRU recogniser, dynamic width",
            14,
            lambda p: torchscript_export(
                Recogniser(),
                (torch.randn(2, 1, 8, 24),),
                p,
                14,
                ["x"],
                ["classes"],
                {"x": {0: "batch", 3: "width"}, "classes": {0: "batch", 1: "width"}},
            ),
            {"x": rng.random((SAMPLES, 1, 8, 24), dtype=np.float32)},
        ),
        (
            "detector16",
            "detector: ConvTranspose + Resize, sigmoid map",
            16,
            lambda p: torchscript_export(
                Detector(),
                (torch.randn(2, 3, 32, 32),),
                p,
                16,
                ["image"],
                ["prob_map", "boxes"],
                {"image": {0: "batch"}},
            ),
            {"image": rng.random((SAMPLES, 3, 32, 32), dtype=np.float32)},
        ),
        (
            "int_inputs18",
            "int64 and int32 inputs",
            18,
            lambda p: dynamo_export(
                Tokens(),
                (torch.randint(0, 50, (2, 12)), torch.randint(0, 2, (2, 12), dtype=torch.int32)),
                p,
                18,
                ["ids", "segments"],
                ["logits"],
                ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},) * 2,
            ),
            {
                "ids": rng.integers(0, 50, (SAMPLES, 12)).astype(np.int64),
                "segments": rng.integers(0, 2, (SAMPLES, 12)).astype(np.int32),
            },
        ),
        (
            "two_heads15",
            "two inputs, two outputs",
            15,
            lambda p: torchscript_export(
                train_two_heads(), two, p, 15, ["a", "b"], ["score", "embed"], {"a": {0: "batch"}, "b": {0: "batch"}}
            ),
            {
                "a": rng.standard_normal((SAMPLES, 8)).astype(np.float32),
                "b": rng.standard_normal((SAMPLES, 4)).astype(np.float32),
            },
        ),
        (
            "encoder18",
            "transformer encoder block",
            18,
            lambda p: dynamo_export(
                Encoder(),
                (torch.randn(2, 10, 32),),
                p,
                18,
                ["x"],
                ["hidden"],
                ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},),
            ),
            {"x": rng.standard_normal((SAMPLES, 10, 32)).astype(np.float32)},
        ),
        (
            "unnamed_dims12",
            "[?, 3, ?, ?] input (unnamed dims)",
            12,
            lambda p: _rewrite(
                torchscript_export(
                    Pooled(),
                    (torch.randn(2, 3, 12, 20),),
                    p,
                    12,
                    ["x"],
                    ["y"],
                    {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}},
                ),
                unnamed_dims,
            ),
            {"x": rng.random((SAMPLES, 3, 12, 20), dtype=np.float32)},
        ),
        (
            "tf2onnx_style13",
            "tf2onnx-style NHWC Keras CNN",
            13,
            tf2onnx_style,
            {"input_1": images.transpose(0, 2, 3, 1)},
        ),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    return [
        CorpusModel(name, pattern, _seeded(build, folder / f"{name}.onnx", index), data, opset)
        for index, (name, pattern, opset, build, data) in enumerate(builders)
    ]


def _seeded(build: Callable[[Path], Path], path: Path, seed: int) -> Path:
    """Build one model from its own seed: its initial weights must not depend on how many random numbers the
    exports before it drew (torch.export and onnxscript draw some, and their versions move)."""
    torch.manual_seed(seed)
    return build(path)


def _rewrite(path: Path, change: Callable[[onnx.ModelProto], onnx.ModelProto]) -> Path:
    onnx.save(change(onnx.load(str(path))), str(path))
    return path


def has_constant_matmul(path: Path) -> bool:
    """A MatMul whose weight is stored in the graph (an initializer or a Constant): what int4 quantizes."""
    graph = onnx.load(str(path)).graph
    stored = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return any(n.op_type == "MatMul" and n.input[1] in stored for n in graph.node)
