"""The upload rules for Keras and SavedModel files, on configs and graphs built here (no tensorflow)."""

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.errors import UnsafeModelFormat, UnsupportedModelFormat
from app.services.inspection import inspect_model
from app.services.tf_inspection import inspect_keras, inspect_saved_model
from tests.unit.services.test_saved_model_graph import func_attr, function, message, node, saved_model, tensor_info


def layer(class_name: str, name: str, module: str = "keras.layers", **config: Any) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": {"name": name, **config}, "registered_name": None}


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    inputs = layer("InputLayer", "x", batch_shape=[None, 4], dtype="float32")
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": [inputs, *layers]}}


def test_a_sequential_model_reads_its_signature() -> None:
    found = inspect_keras(sequential(layer("Dense", "logits", units=3)), "m.keras")
    assert found.inputs == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert found.outputs == [{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}]


def test_a_functional_model_reads_its_named_inputs_and_outputs() -> None:
    config = {
        "module": "keras",
        "class_name": "Functional",
        "config": {
            "layers": [layer("InputLayer", "a", batch_shape=[None, 2, 3]), layer("Flatten", "flat")],
            "input_layers": [["a", 0, 0]],
            "output_layers": ["flat", 0, 0],
        },
    }
    found = inspect_keras(config, "m.keras")
    assert [i["name"] for i in found.inputs] == ["a"] and found.inputs[0]["shape"] == ["batch", 2, 3]
    assert found.outputs == [{"name": "flat", "dtype": "float32", "shape": None}]


@pytest.mark.parametrize(
    "bad",
    [
        layer("Lambda", "code", function={"class_name": "__lambda__", "config": {"code": "..."}}),
        layer("Dense", "d", units=2, activation={"module": "builtins", "class_name": "__lambda__", "config": {}}),
        layer("TFSMLayer", "other", filepath="/etc"),
        layer("Evil", "e", module="os"),
        {**layer("Custom", "c", module="keras.layers"), "registered_name": "mypkg>Custom"},
    ],
    ids=["lambda", "serialized-function", "tfsmlayer", "foreign-module", "registered-class"],
)
def test_code_or_foreign_classes_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(UnsafeModelFormat) as refused:
        inspect_keras(sequential(bad, layer("Dense", "logits", units=3)), "m.keras")
    assert refused.value.extra["refused_layers"]


def test_a_subclassed_model_without_layers_is_unsupported() -> None:
    with pytest.raises(UnsupportedModelFormat, match="Sequential or Functional"):
        inspect_keras({"module": "keras", "class_name": "Model", "config": {}}, "m.keras")


def graph(*, serve: bytes, save: bytes = b"", extra_functions: bytes = b"") -> bytes:
    """A SavedModel like tf.saved_model.save writes: the signature calls `serve`; a saver node calls `save`."""
    nodes = (
        node("x", "Placeholder")
        + node("call", "StatefulPartitionedCall", ("x",), func_attr("f", "serve"))
        + node("saver", "StatefulPartitionedCall", (), func_attr("f", "save"))
    )
    functions = function("serve", serve) + function("save", save or node("s", "SaveV2")) + extra_functions
    signature = tensor_info("x", "x:0", 1, (-1, 4)) + message(2, tensor_info("y", "call:0", 1, (-1, 4))[2:])
    return saved_model(nodes, functions, signature)


def test_a_plain_savedmodel_is_read_with_its_checkpoint_functions() -> None:
    found = inspect_saved_model(graph(serve=node("m", "MatMul")), "m.zip", "sm")
    assert found.format == "savedmodel"
    assert found.inputs == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert found.details["root"] == "sm"


@pytest.mark.parametrize("op", ["WriteFile", "ReadFile", "MatchingFiles", "PyFunc", "EagerPyFunc", "RpcCallV9"])
def test_a_denied_op_anywhere_is_refused(op: str) -> None:
    uncalled = function("never_called", node("w", op))
    with pytest.raises(UnsafeModelFormat) as refused:
        inspect_saved_model(graph(serve=node("m", "MatMul"), extra_functions=uncalled), "m.zip", "sm")
    assert refused.value.extra["refused_ops"] == [op]


def test_checkpoint_ops_the_signature_reaches_are_refused() -> None:
    with pytest.raises(UnsafeModelFormat, match="SaveV2"):
        inspect_saved_model(graph(serve=node("s", "SaveV2")), "m.zip", "sm")


def test_a_savedmodel_without_serving_signature_is_unsupported() -> None:
    data = saved_model(node("x", "Placeholder"), b"", b"")
    with pytest.raises(UnsupportedModelFormat, match="serving_default"):
        inspect_saved_model(data, "m.zip", "sm")


def test_a_zipped_savedmodel_with_a_malformed_graph_is_a_422(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sm/saved_model.pb", b"\x12\xff\xff\xff\x0f")
        zf.writestr("sm/variables/variables.index", b"")
    with pytest.raises(UnsupportedModelFormat, match="malformed"):
        inspect_model(path, "broken.zip", 1 << 30)


def test_a_legacy_h5_file_is_refused_by_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(UnsafeModelFormat, match=r"model\.save\('model\.keras'\)"):
        inspect_model(path, "model.bin", 1 << 30)


def test_a_keras_zip_is_told_apart_from_a_hugging_face_folder(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(sequential(layer("Dense", "logits", units=3))))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    assert inspect_model(path, "m.keras", 1 << 30).format == "keras"
