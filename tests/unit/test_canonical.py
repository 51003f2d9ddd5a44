"""Canonicalising an ONNX upload: an IR-3 / opset-9 graph listing its weights as inputs, and a graph whose
weights are Constant nodes, come out at opset 13 with their weights as initializers, typed, and computing
exactly what they did."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from tests.compat.corpus import constants_for_initializers, ir3_opset9, tf2onnx_style
from workers.conversion.canonical import canonicalise


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_an_old_graph_with_weights_as_inputs_is_brought_up(tmp_path: Path) -> None:
    source = ir3_opset9(tmp_path / "old.onnx")
    changes = canonicalise(source, tmp_path / "canonical.onnx")
    model = onnx.load(str(tmp_path / "canonical.onnx"))
    assert changes["opset"] == {"before": 9, "after": 13}
    assert changes["ir_version"]["after"] >= 7, "the IR version opset 13 needs"
    assert [i.name for i in model.graph.input] == ["x"], "initializers are no longer graph inputs"
    assert changes["initializers_removed_from_inputs"] == 5
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(_outputs(tmp_path / "canonical.onnx", {"x": x})[0], _outputs(source, {"x": x})[0])


def test_constant_node_weights_become_initializers(tmp_path: Path) -> None:
    source = tmp_path / "constants.onnx"
    onnx.save(constants_for_initializers(onnx.load(str(tf2onnx_style(tmp_path / "tf.onnx")))), str(source))
    changes = canonicalise(source, tmp_path / "canonical.onnx")
    model = onnx.load(str(tmp_path / "canonical.onnx"))
    assert changes["constants_to_initializers"] == 7 and changes["changed"]
    assert not [n for n in model.graph.node if n.op_type == "Constant"], "no Constant node is left"
    assert changes["shape_inference"] == "symbolic (onnxruntime)"
    assert {v.name for v in model.graph.value_info} >= {"d0", "flat"}, "intermediate tensors are typed"
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(
        _outputs(tmp_path / "canonical.onnx", {"input_1": x})[0], _outputs(source, {"input_1": x})[0]
    )
