"""A TensorFlow upload's loading and conversion in the worker (workers.conversion.tensorflow), on a Functional
Keras model of two named inputs and two outputs built here: the ONNX form keeps the upload's names and output
order, and computes what Keras computes."""

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.schemas.tasks import ModelRecord
from app.services.tf_inspection import inspect_keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402 (the formats extra: make install puts it in; a missing one fails, never skips)


@pytest.fixture(scope="module")
def two_headed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    image = keras.Input((6,), name="image")
    meta = keras.Input((2,), name="meta")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(keras.layers.Concatenate()([image, meta]))
    model = keras.Model(
        [image, meta], [keras.layers.Dense(3, name="scores")(hidden), keras.layers.Dense(1, name="value")(hidden)]
    )
    path = tmp_path_factory.mktemp("functional") / "model.keras"
    model.save(path)
    return path, model


def record(path: Path) -> ModelRecord:
    """The model as the API recorded it at upload (its config read without keras)."""
    import json

    with zipfile.ZipFile(path) as zf:
        found = inspect_keras(json.loads(zf.read("config.json")), path.name)
    return ModelRecord.model_validate(
        {
            "id": "mdl_x",
            "format": "keras",
            "inputs": found.inputs,
            "outputs": found.outputs,
            "details": found.details,
            "size_bytes": path.stat().st_size,
            "sha256": "0" * 64,
            "param_count": None,
        }
    )


def test_the_upload_names_both_inputs_and_outputs(two_headed: tuple[Path, Any]) -> None:
    model = record(two_headed[0])
    assert [(i.name, i.shape) for i in model.inputs] == [("image", ["batch", 6]), ("meta", ["batch", 2])]
    assert [o.name for o in model.outputs] == ["scores", "value"]


def test_the_onnx_form_keeps_names_order_and_outputs(two_headed: tuple[Path, Any], tmp_path: Path) -> None:
    import onnxruntime as ort

    from workers.conversion.tensorflow import load_keras, to_onnx

    path, original = two_headed
    model = record(path)
    (tmp_path / "upload").symlink_to(path)
    source = load_keras(tmp_path / "upload", model, tmp_path, 1 << 30)
    onnx_path = to_onnx(source, model, tmp_path / "original.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["scores", "value"]
    rng = np.random.default_rng(0)
    feeds = {"image": rng.random((5, 6), dtype=np.float32), "meta": rng.random((5, 2), dtype=np.float32)}
    converted = session.run(None, feeds)
    expected = [np.asarray(o) for o in original([feeds["image"], feeds["meta"]])]
    for got, want, ran in zip(converted, expected, source.run(feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(ran, want, atol=1e-5)
    assert "tf2onnx" in source.converter and "safe_mode" in source.converter
