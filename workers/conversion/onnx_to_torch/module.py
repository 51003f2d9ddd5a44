"""The converted graph as an nn.Module, and the errors that say what the converter does not cover."""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Value = Any
"""a tensor, or a python int/float/list where the graph computes shapes (Shape's output, small int constants),
so shape arithmetic stays plain python and traces symbolically under torch.export"""


class ConversionUnsupported(Exception):
    """The graph holds operators (or forms of them) the converter does not cover; names them."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__(", ".join(ops))
        self.ops = ops


class FormUnsupported(Exception):
    """A covered operator in a form (attribute, non-constant weight) the converter does not handle."""


class Step:
    """One node: its callable (a registered layer's forward or a function) and where its values come from/go."""

    def __init__(
        self, fn: Callable[..., Value], inputs: list[str], outputs: list[str], layer: str | None = None
    ) -> None:
        self.fn = fn
        self.inputs = inputs
        self.outputs = outputs
        self.layer = layer
        """looked up by name on each call, so replacing or copying the module's layers is seen"""


class OnnxModule(nn.Module):
    """A converted ONNX graph; `layers` holds the weight-carrying modules by sanitized initializer name."""

    def __init__(self, input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.input_names = input_names
        self.output_names = output_names
        self.layers = nn.ModuleDict()
        self.steps: list[Step] = []
        self._buffers_by_value: dict[str, str] = {}
        self.python_constants: dict[str, Value] = {}

    def constant(self, value_name: str, value: Value) -> None:
        """A constant of the graph: a tensor becomes a buffer (moves with .to()), a python value stays one."""
        if isinstance(value, torch.Tensor):
            key = f"c{len(self._buffers_by_value)}"
            self.register_buffer(key, value)
            self._buffers_by_value[value_name] = key
        else:
            self.python_constants[value_name] = value

    def forward(self, *tensors: torch.Tensor) -> Any:
        values: dict[str, Value] = dict(zip(self.input_names, tensors, strict=True))
        values.update(self.python_constants)
        for value_name, key in self._buffers_by_value.items():
            values[value_name] = getattr(self, key)
        for step in self.steps:
            args = [values[n] if n else None for n in step.inputs]
            result = step.fn(self.layers[step.layer], *args) if step.layer else step.fn(*args)
            if len(step.outputs) == 1:
                values[step.outputs[0]] = result
            else:
                for name, item in zip(step.outputs, result, strict=False):  # optional outputs left unset
                    if name:
                        values[name] = item
        outputs = [values[n] for n in self.output_names]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
