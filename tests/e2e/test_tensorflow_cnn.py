"""TensorFlow and Keras in, through the API: a Keras CNN trained here on the digits, uploaded as a `.keras`
file and as a zipped SavedModel, converted to ONNX (tf2onnx), quantized static int8, and the downloaded
artifact run in onnxruntime on digits.x_test against the Keras model's own accuracy. Uploads that would run
code or touch files are refused, and a canary file shows nothing of theirs ran. Figures are printed
(pytest -s) for the README."""

import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import Stack, upload
from tests.e2e.test_compression_cnn import run_job, upload_dataset
from workers.examples import Digits

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402 (the formats extra: make install puts it in; a missing one fails, never skips)
import tensorflow as tf  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]
LATENCY = {"batch_sizes": [32], "runs": 20, "warmup": 3}


def nhwc(x: np.ndarray) -> np.ndarray:
    """The digits as Keras takes images on the CPU: channels last."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def keras_cnn(digits: Digits) -> Any:
    """A small Keras CNN trained on the digits (about 98% test accuracy, a few seconds)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="x"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(nhwc(digits.x_train), digits.y_train, epochs=12, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_accuracy(keras_cnn: Any, digits: Digits) -> float:
    accuracy = float((keras_cnn.predict(nhwc(digits.x_test), verbose=0).argmax(1) == digits.y_test).mean())
    assert accuracy >= 0.96, f"the Keras digits CNN only reached {accuracy:.3f} test accuracy"
    return accuracy


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder.parent))
    return path


@pytest.fixture(scope="module")
def uploads(keras_cnn: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras-cnn")
    keras_cnn.save(folder / "digits.keras")
    keras_cnn.export(str(folder / "digits_savedmodel"), verbose=False)
    return {
        "keras": folder / "digits.keras",
        "savedmodel": zip_folder(folder / "digits_savedmodel", folder / "digits_savedmodel.zip"),
    }


@pytest.fixture(scope="module")
def datasets(stack: Stack, digits: Digits) -> dict[str, str]:
    with stack.client() as client:
        return {
            "train": upload_dataset(client, {"x": nhwc(digits.x_train), "labels": digits.y_train}, "train.npz"),
            "test": upload_dataset(client, {"x": nhwc(digits.x_test), "labels": digits.y_test}, "test.npz"),
        }


def test_keras_upload_reads_its_signature(client: httpx.Client, uploads: dict[str, Path]) -> None:
    model = upload(client, uploads["keras"])
    assert model["format"] == "keras"
    assert model["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 8, 8, 1]}]
    assert model["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_tensorflow_upload_to_onnx_static_int8(
    client: httpx.Client,
    stack: Stack,
    uploads: dict[str, Path],
    datasets: dict[str, str],
    digits: Digits,
    keras_accuracy: float,
    fmt: str,
) -> None:
    model = upload(client, uploads[fmt])
    assert model["format"] == fmt, f"{uploads[fmt].name} was detected as {model['format']}"
    spec = {
        "model_id": model["id"],
        "evaluate": {"dataset_id": datasets["test"], "latency": LATENCY},
        "passes": [
            {"type": "quantize", "method": "static", "calibration": {"dataset_id": datasets["train"], "samples": 128}}
        ],
    }
    report, listing, artifact = run_job(client, stack, spec)
    conversion = report["canonical"]["source_conversion"]
    assert conversion["fidelity"]["cosine_min"] > 0.9999, "tf2onnx's ONNX computes what TensorFlow computes"
    assert "tf2onnx" in conversion["tools"]
    assert report["original"]["accuracy"] == pytest.approx(keras_accuracy), "the original is TensorFlow's"
    notes = report["evaluation"]["latency"]["notes"]
    assert any("tf2onnx conversion in onnxruntime" in n for n in notes), "the report says what timed the original"
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"x": nhwc(digits.x_test)})[0]
    accuracy = float((logits.argmax(1) == digits.y_test).mean())
    assert keras_accuracy - accuracy <= 0.01, f"accuracy {keras_accuracy:.4f} -> {accuracy:.4f}"
    assert listing["format"] == "onnx"
    assert any(n.op_type == "QuantizeLinear" for n in _graph(artifact).node), "the artifact is int8 (QDQ)"
    print(
        f"\n{fmt} ({uploads[fmt].stat().st_size} bytes) -> ONNX static int8 ({len(artifact)} bytes): "
        f"accuracy {keras_accuracy:.4f} -> {accuracy:.4f}, tf2onnx min cosine "
        f"{conversion['fidelity']['cosine_min']:.6f}, CPU p50 speedup at batch 32 "
        f"{report['result']['speedup_p50']['32']:.2f}x"
    )


def _graph(artifact: bytes) -> Any:
    import onnx

    return onnx.load_from_string(artifact).graph


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_keras_lambda_layer_is_refused_and_never_runs(client: httpx.Client, tmp_path: Path) -> None:
    canary = tmp_path / "lambda-ran"

    def touch(x: Any) -> Any:
        canary.write_text("the Lambda layer ran")
        return x

    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Lambda(touch), keras.layers.Dense(2)])
    model.save(tmp_path / "lambda.keras")
    canary.unlink()  # building the model called the layer here, in the test
    with (tmp_path / "lambda.keras").open("rb") as fh:
        problem = _problem(client.post("/v1/models", files={"file": ("lambda.keras", fh)}))
    assert problem["code"] == "unsafe_model_format"
    assert "Lambda" in problem["detail"] and "model.save('model.keras')" in problem["detail"]
    assert not canary.exists(), "the Lambda layer ran at upload"


@pytest.fixture(scope="module")
def write_file_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A SavedModel whose serving function writes a file (tf.io.write_file), zipped, and that file's path."""
    folder = tmp_path_factory.mktemp("writefile")
    canary = folder / "written-by-the-model"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x: Any) -> Any:
            tf.io.write_file(str(canary), "the model ran")
            return x * 2.0

    tf.saved_model.save(Writer(), str(folder / "writer"))
    assert not canary.exists(), "saving traced the function without running it"
    return zip_folder(folder / "writer", folder / "writer.zip"), canary


def test_savedmodel_writing_a_file_is_refused_and_never_runs(
    client: httpx.Client, stack: Stack, write_file_savedmodel: tuple[Path, Path]
) -> None:
    archive, canary = write_file_savedmodel
    with archive.open("rb") as fh:
        problem = _problem(client.post("/v1/models", files={"file": ("writer.zip", fh)}))
    assert problem["code"] == "unsafe_model_format"
    assert problem["refused_ops"] == ["WriteFile"], problem
    assert "WriteFile" in problem["detail"]
    assert not canary.exists(), "the SavedModel's WriteFile ran at upload"
    listed = client.get("/v1/models").json()["items"]
    assert all(m["filename"] != "writer.zip" for m in listed), "a refused upload is not stored, so no job can run it"


def test_legacy_h5_is_refused(client: httpx.Client, keras_cnn: Any, tmp_path: Path) -> None:
    keras_cnn.save(tmp_path / "digits.h5")
    with (tmp_path / "digits.h5").open("rb") as fh:
        problem = _problem(client.post("/v1/models", files={"file": ("digits.h5", fh)}))
    assert problem["code"] == "unsafe_model_format"
    assert ".keras" in problem["detail"]


def model_record(fmt: str, output: str, details: dict[str, Any]) -> Any:
    """The stored model as the worker's child gets it, for a model of one (batch, 4) input `x`."""
    from app.schemas.tasks import ModelRecord

    return ModelRecord.model_validate(
        {
            "id": "mdl_x",
            "format": fmt,
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
            "outputs": [{"name": output, "dtype": "float32", "shape": ["batch", 4]}],
            "details": details,
            "size_bytes": 1,
            "sha256": "0" * 64,
            "param_count": None,
        }
    )


def test_worker_refuses_them_again(tmp_path: Path, write_file_savedmodel: tuple[Path, Path], digits: Digits) -> None:
    """Defence in depth: a stored upload that escaped the API's rules is refused by the worker's loader
    before tensorflow loads it (the same WriteFile SavedModel, given to the loader directly)."""
    from workers.conversion.tensorflow import load_saved_model
    from workers.runtime import PassFailed

    archive, canary = write_file_savedmodel
    record = model_record("savedmodel", "output_0", {"root": "writer"})
    shutil.copyfile(archive, tmp_path / "upload")
    with pytest.raises(PassFailed) as refused:
        load_saved_model(tmp_path / "upload", record, tmp_path, 1 << 30)
    assert refused.value.code == "unsafe_model_format" and "WriteFile" in refused.value.message
    assert not canary.exists(), "the worker ran the SavedModel's WriteFile"


def test_worker_refuses_a_lambda_layer_again(tmp_path: Path) -> None:
    """The worker's loader checks a stored `.keras` again (and loads with safe_mode=True): a Lambda layer
    never runs there either."""
    from workers.conversion.tensorflow import load_keras
    from workers.runtime import PassFailed

    canary = tmp_path / "lambda-ran"

    def touch(x: Any) -> Any:
        canary.write_text("the Lambda layer ran")
        return x

    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Lambda(touch), keras.layers.Dense(2)])
    model.save(tmp_path / "upload.keras")
    canary.unlink()
    (tmp_path / "upload.keras").rename(tmp_path / "upload")
    record = model_record("keras", "dense", {})
    with pytest.raises(PassFailed) as refused:
        load_keras(tmp_path / "upload", record, tmp_path, 1 << 30)
    assert refused.value.code == "unsafe_model_format" and "Lambda" in refused.value.message
    assert not canary.exists(), "the worker ran the Lambda layer"


@pytest.fixture(scope="module")
def keras_id(stack: Stack, uploads: dict[str, Path]) -> str:
    with stack.client() as client:
        return str(upload(client, uploads["keras"])["id"])


def test_keras_upload_static_int8_as_openvino_ir(
    client: httpx.Client,
    stack: Stack,
    keras_id: str,
    datasets: dict[str, str],
    digits: Digits,
    keras_accuracy: float,
    tmp_path: Path,
) -> None:
    """Quantized static int8 by onnxruntime, delivered as an OpenVINO IR and run here by OpenVINO. The
    conversion check compares OpenVINO's int8 kernels with onnxruntime's on the same QDQ graph, which round
    differently (min cosine 0.988 to above 0.99 from one in-session training to another), so it is held to
    0.98 here instead of the default 0.99."""
    from tests.e2e.test_deployment_formats import openvino_model

    spec = {
        "model_id": keras_id,
        "evaluate": {"dataset_id": datasets["test"], "latency": LATENCY, "min_conversion_cosine": 0.98},
        "passes": [
            {"type": "quantize", "method": "static", "calibration": {"dataset_id": datasets["train"], "samples": 128}},
            {"type": "convert", "to": "openvino"},
        ],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert listing["format"] == "openvino"
    compiled = openvino_model(artifact, tmp_path)
    accuracy = float((compiled(nhwc(digits.x_test))[0].argmax(1) == digits.y_test).mean())
    assert keras_accuracy - accuracy <= 0.01, f"accuracy {keras_accuracy:.4f} -> {accuracy:.4f}"
    assert report["result"]["latency"][0]["runtime"] == "openvino"
    print(
        f"\nkeras -> static int8 -> OpenVINO IR ({len(artifact)} bytes zipped): accuracy {keras_accuracy:.4f} -> "
        f"{accuracy:.4f}, p50 at batch 32 {report['result']['latency'][0]['p50_ms']:.3f} ms on openvino "
        f"(original {report['original']['latency'][0]['p50_ms']:.3f} ms on onnxruntime)"
    )


def test_keras_upload_as_tflite_int8(
    client: httpx.Client, stack: Stack, keras_id: str, datasets: dict[str, str], digits: Digits, keras_accuracy: float
) -> None:
    """int8 TFLite (the calibration digits as the representative dataset), run here in the LiteRT interpreter in
    the input layout the report names."""
    from ai_edge_litert.interpreter import Interpreter

    calibration = {"dataset_id": datasets["train"], "samples": 128}
    spec = {
        "model_id": keras_id,
        "evaluate": {"dataset_id": datasets["test"], "latency": LATENCY},
        "passes": [{"type": "convert", "to": "tflite", "precision": "int8", "calibration": calibration}],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert listing["format"] == "tflite"
    layout = (report["result"].get("input_layout") or {}).get("inputs", {}).get("x")
    x = nhwc(digits.x_test)
    runner = Interpreter(model_content=artifact).get_signature_runner()
    logits = next(iter(runner(x=np.ascontiguousarray(x.transpose(layout)) if layout else x).values()))
    accuracy = float((logits.argmax(1) == digits.y_test).mean())
    assert keras_accuracy - accuracy <= 0.01, f"accuracy {keras_accuracy:.4f} -> {accuracy:.4f}"
    types = {d["dtype"] for d in Interpreter(model_content=artifact).get_tensor_details()}
    assert np.int8 in types, f"the TFLite model is int8: {types}"
    assert report["result"]["latency"][0]["runtime"] == "litert"
    print(
        f"\nkeras -> TFLite int8 ({len(artifact)} bytes, input layout {layout}): accuracy {keras_accuracy:.4f} -> "
        f"{accuracy:.4f}, p50 at batch 32 {report['result']['latency'][0]['p50_ms']:.3f} ms on litert"
    )
