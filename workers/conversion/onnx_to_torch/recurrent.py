"""LSTM, GRU and RNN as nn.LSTM / nn.GRU / nn.RNN holding the weights (gates reordered from ONNX's layout),
forward, reverse or bidirectional, sequence length free. ONNX's outputs (Y [seq, dirs, batch, hidden],
Y_h, Y_c) are rebuilt from torch's. Layout 1 (batch first) is refused, as onnxruntime refuses it."""

from collections.abc import Callable

import torch
from torch import nn

from workers.conversion.onnx_to_torch.module import FormUnsupported
from workers.conversion.onnx_to_torch.node import Built, Node

GATES = {"LSTM": (4, [0, 2, 3, 1]), "GRU": (3, [1, 0, 2]), "RNN": (1, [0])}
"""gates per op, and torch's gate order as indices into ONNX's (LSTM i,o,f,c -> i,f,c,o; GRU z,r,h -> r,z,h)"""
DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}


def _reorder(block: torch.Tensor, op: str, hidden: int) -> torch.Tensor:
    _, order = GATES[op]
    return torch.cat([block[i * hidden : (i + 1) * hidden] for i in order])


def _activation(node: Node) -> str:
    """The RNN nonlinearity, or a refusal when the activations are not torch's."""
    given = [a.lower() for a in node.attrs.get("activations", [])]
    directions = 2 if node.attrs.get("direction", "forward") == "bidirectional" else 1
    expected = DEFAULT_ACTIVATIONS[node.op]
    if node.op == "RNN" and given and set(given) <= {"relu", "tanh"} and len(set(given)) == 1:
        return given[0]
    if given and given != expected * directions:
        raise FormUnsupported(f"activations {given}")
    return "tanh"


def _check(node: Node) -> None:
    if node.attrs.get("clip") is not None or node.attrs.get("input_forget", 0):
        raise FormUnsupported("clip / input_forget")
    if node.attrs.get("layout", 0):
        raise FormUnsupported("layout 1 (batch first)")
    if node.input(4):
        raise FormUnsupported("sequence_lens (variable lengths in one batch)")
    if node.op == "LSTM" and node.input(7):
        raise FormUnsupported("peepholes")
    if node.op == "GRU" and not node.attrs.get("linear_before_reset", 0):
        raise FormUnsupported("linear_before_reset=0 (torch's GRU applies the reset after the linear)")


def _layer(node: Node) -> nn.RNNBase:
    w, r = node.weight(1), node.weight(2)
    b = node.weight(3, "biases") if node.input(3) else None
    directions, gate_rows, input_size = w.shape
    hidden = int(node.attrs.get("hidden_size", gate_rows // GATES[node.op][0]))
    bidirectional = directions == 2
    if node.op == "LSTM":
        layer: nn.RNNBase = nn.LSTM(input_size, hidden, bidirectional=bidirectional, bias=b is not None)
    elif node.op == "GRU":
        layer = nn.GRU(input_size, hidden, bidirectional=bidirectional, bias=b is not None)
    else:
        layer = nn.RNN(
            input_size, hidden, nonlinearity=_activation(node), bidirectional=bidirectional, bias=b is not None
        )
    with torch.no_grad():
        for d in range(directions):
            suffix = "_reverse" if d == 1 else ""
            getattr(layer, f"weight_ih_l0{suffix}").copy_(_reorder(w[d], node.op, hidden))
            getattr(layer, f"weight_hh_l0{suffix}").copy_(_reorder(r[d], node.op, hidden))
            if b is not None:
                getattr(layer, f"bias_ih_l0{suffix}").copy_(_reorder(b[d, :gate_rows], node.op, hidden))
                getattr(layer, f"bias_hh_l0{suffix}").copy_(_reorder(b[d, gate_rows:], node.op, hidden))
    return layer


def _recurrent(node: Node) -> Built:
    _check(node)
    _activation(node)
    reverse = node.attrs.get("direction", "forward") == "reverse"
    lstm = node.op == "LSTM"
    inputs = [node.input(0), node.input(5), node.input(6) if lstm else ""]

    def fn(
        layer: nn.Module, x: torch.Tensor, h0: torch.Tensor | None, c0: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        if reverse:
            x = x.flip(0)
        state: object = None
        if h0 is not None or c0 is not None:
            like = h0 if h0 is not None else c0
            assert like is not None
            h = h0 if h0 is not None else torch.zeros_like(like)
            state = (h, c0 if c0 is not None else torch.zeros_like(like)) if lstm else h
        out, last = layer(x, state)
        if reverse:
            out = out.flip(0)
        h_n, c_n = last if lstm else (last, None)
        seq, batch = out.shape[0], out.shape[1]
        y = out.reshape(seq, batch, -1, h_n.shape[-1]).transpose(1, 2)  # [seq, dirs, batch, hidden]
        return (y, h_n, c_n) if lstm else (y, h_n)

    outputs = (node.outputs + ["", "", ""])[: 3 if lstm else 2]  # Y_h, Y_c may be left out
    return Built(fn, inputs, outputs=outputs, layer=node.add_layer(_layer(node), node.input(1)))


OPS: dict[str, Callable[[Node], Built]] = dict.fromkeys(GATES, _recurrent)
