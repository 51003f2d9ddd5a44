"""Which files `squeeze submit` sends with an .onnx model: the external data files its graph names, found
beside it, and nothing a crafted location points at outside the model's folder."""

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from app.client import external_data_files


def _model_with_external_weight(folder: Path, location: str) -> Path:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    path = folder / "m.onnx"
    onnx.save_model(
        helper.make_model(graph), path, save_as_external_data=True, location="m.onnx.data", size_threshold=0
    )
    if location != "m.onnx.data":  # point the weight elsewhere, with a file really there
        model = onnx.load(path, load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        (folder / location).write_bytes((folder / "m.onnx.data").read_bytes())
        onnx.save_model(model, path)
    return path


def test_the_data_file_beside_the_model_goes_with_it(tmp_path: Path) -> None:
    path = _model_with_external_weight(tmp_path, "m.onnx.data")
    assert external_data_files(path) == [(tmp_path / "m.onnx.data").resolve()]


def test_a_location_outside_the_folder_is_not_sent(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _model_with_external_weight(folder, "../secret.bin")
    assert (tmp_path / "secret.bin").is_file()
    assert external_data_files(path) == [], "the client never uploads a file outside the model's folder"


def test_inline_weights_and_bytes_that_are_not_onnx_send_nothing_more(tmp_path: Path, mlp_onnx: Path) -> None:
    assert external_data_files(mlp_onnx) == []
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    assert external_data_files(junk) == [], "the server, not the client, says what is wrong with it"
