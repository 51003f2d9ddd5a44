"""What an operator's maker sees of its node (attributes, opset, constant inputs, ranks) and what it returns."""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from workers.conversion.onnx_to_torch.module import FormUnsupported, OnnxModule, Value

PY = (int, float, bool, list, torch.SymInt, torch.SymFloat, torch.SymBool)
PYTHON_VECTOR_MAX = 64
"""int vectors up to this many elements (constants, ConstantOfShape of a shape's size) stay python values, like
the shapes they combine with"""


@dataclass
class Built:
    """The callable for one node; `inputs`/`outputs` override the node's own (weights dropped, a fused Add)."""

    fn: Callable[..., Value]
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    layer: str | None = None


@dataclass
class Graph:
    """What every node of one graph shares: constants, ranks, consumers, and the module being filled."""

    module: OnnxModule
    opset: int
    static: dict[str, np.ndarray]
    ranks: dict[str, int]
    dynamic_tail: set[str]
    """values whose inferred shape has a dynamic axis after the first (a Reshape of one never flattens)"""
    consumers: dict[str, list[onnx.NodeProto]]
    skipped: set[int] = field(default_factory=set)
    """ids of nodes folded into an earlier one (MatMul's bias Add)"""


class Node:
    def __init__(self, proto: onnx.NodeProto, graph: Graph) -> None:
        self.proto = proto
        self.graph = graph
        self.op = proto.op_type
        self.opset = graph.opset
        self.attrs: dict[str, Any] = {a.name: _decode(onnx.helper.get_attribute_value(a)) for a in proto.attribute}

    def input(self, i: int) -> str:
        """The i-th input's name, '' when absent (optional inputs may be left out or named '')."""
        return self.proto.input[i] if i < len(self.proto.input) else ""

    @property
    def inputs(self) -> list[str]:
        return list(self.proto.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.proto.output)

    def static(self, i: int) -> np.ndarray | None:
        """The i-th input's value when it is an initializer or a Constant's output, else None."""
        name = self.input(i)
        return self.graph.static.get(name) if name else None

    def rank(self, i: int = 0) -> int | None:
        return self.graph.ranks.get(self.input(i))

    def weight(self, i: int, what: str = "weights") -> torch.Tensor:
        value = self.static(i)
        if value is None:
            raise FormUnsupported(f"{what} not constant")
        return torch.from_numpy(np.array(value, dtype=np.float32))

    def add_layer(self, layer: nn.Module, weight: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", re.sub(r"\.weight$", "", weight)) or self.op.lower()
        name = f"l_{base}"
        while name in self.graph.module.layers:
            name += "_"
        self.graph.module.layers[name] = layer
        return name

    def sole_consumer(self, value: str) -> onnx.NodeProto | None:
        users = self.graph.consumers.get(value, [])
        return users[0] if len(users) == 1 else None

    def used(self, output: int) -> bool:
        name = self.proto.output[output] if output < len(self.proto.output) else ""
        return bool(name) and (bool(self.graph.consumers.get(name)) or name in self.graph.module.output_names)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def is_py(value: Value) -> bool:
    return isinstance(value, PY)


def ints(value: Value) -> list[Any]:
    """A shape-like value as a python list (SymInts stay symbolic)."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, list):
        return list(value)
    return [value]


def as_tensor(value: Value, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if like is not None:
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    return torch.tensor(value)


def axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def pyop(fn: Callable[..., Value], *args: Value) -> Value:
    """`fn` elementwise over python scalars and lists (numpy broadcasting of rank <= 1)."""
    n = max((len(a) for a in args if isinstance(a, list)), default=None)
    if n is None:
        return fn(*args)
    columns = [a if isinstance(a, list) else [a] for a in args]
    columns = [c * n if len(c) == 1 else c for c in columns]
    return [fn(*items) for items in zip(*columns, strict=True)]


def tensors(*args: Value) -> list[Value]:
    """Python values among tensors made tensors like the first tensor (None stays None)."""
    like = next((a for a in args if isinstance(a, torch.Tensor)), None)
    return [as_tensor(a, like) if a is not None and not isinstance(a, torch.Tensor) else a for a in args]
