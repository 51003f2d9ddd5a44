"""Models built so that plain post-training quantization collapses, the way detection heads do in the wild.

`probability_map` is a detector-like head: features -> a layer whose activations span a huge range -> a
projection -> sigmoid, giving a sparse probability map. Half of its signal runs through four channels of
magnitude about 1e6 (read back with weights of 1e-6), half through ordinary channels of magnitude 1:

- fp16 collapses: the 1e6-scale weights are clamped to float16's 65504 and those activations overflow it;
- dynamic (and static) int8 collapses: one uint8 scale per tensor spans +-1e6 for the activations, so
  every ordinary channel rounds to the zero point.

Keeping `fc1`, `fc1_bias` and `head` in float32 (fp16) or only `head` in float (int8) restores it.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, HIDDEN, CELLS, HUGE = 16, 32, 64, 4
HUGE_SCALE = 1e6


def probability_map(path: Path, seed: int = 0) -> Path:
    """Write the model (input `x` [batch, 16] float32, output `prob` [batch, 64]) to `path`."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.25, (FEATURES, HIDDEN)).astype(np.float32)
    w1[:, :HUGE] *= HUGE_SCALE
    b1 = np.zeros(HIDDEN, np.float32)
    w2 = rng.normal(0, 0.5, (HIDDEN, CELLS)).astype(np.float32)
    w2[:HUGE] = rng.normal(0, 1.4, (HUGE, CELLS)) / HUGE_SCALE  # the huge channels carry half the signal
    b2 = np.full(CELLS, -4.0, np.float32)  # most cells near 0: a sparse probability map
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["h"], name="fc1_bias"),
        helper.make_node("MatMul", ["h", "w2"], ["m2"], name="head"),
        helper.make_node("Add", ["m2", "b2"], ["logits"], name="head_bias"),
        helper.make_node("Sigmoid", ["logits"], ["prob"], name="probability"),
    ]
    graph = helper.make_graph(
        nodes,
        "probability_map",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", CELLS])],
        [numpy_helper.from_array(a, n) for n, a in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def probability_map_inputs(samples: int, seed: int = 1) -> np.ndarray:
    """Features the model was made for: standard normal, float32."""
    return np.random.default_rng(seed).normal(0, 1, (samples, FEATURES)).astype(np.float32)
