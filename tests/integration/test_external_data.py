"""An ONNX model with external data (torch 2.13's default export) uploads as two files in one multipart
request, is stored as the model's folder, and runs a job; the .onnx alone is refused with what to do."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import Stack


@pytest.mark.parametrize(
    "passes",
    [[{"type": "quantize", "method": "dynamic"}], [{"type": "optimize"}], [{"type": "convert", "to": "onnx"}]],
    ids=["quantize", "optimize", "no-op"],
)
def test_model_and_data_upload_in_one_request_and_run(
    stack: Stack, external_onnx: tuple[Path, Path], passes: list[dict], tmp_path: Path
) -> None:
    model, data = external_onnx
    with stack.client() as client, model.open("rb") as m, data.open("rb") as d:
        response = client.post("/v1/models", files=[("file", (model.name, m)), ("data", (data.name, d))])
        assert response.status_code == 201, response.text
        uploaded = response.json()
        assert uploaded["param_count"] == 64 * 256 + 256 + 256 * 10 + 10, "the weights were found in the data file"
        job = client.post(
            "/v1/jobs", json={"model_id": uploaded["id"], "passes": passes, "input_shapes": {"x": [4, 64]}}
        )
        assert job.status_code == 202, job.text
        done = stack.wait_for(client, job.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        artifact = next(a for a in client.get(f"/v1/jobs/{done['id']}/artifacts").json() if a["kind"] == "model")
        downloaded = tmp_path / "model.onnx"
        downloaded.write_bytes(client.get(artifact["download_url"]).content)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    (out,) = ort.InferenceSession(str(downloaded)).run(None, {"x": x})  # alone: its weights are inside
    assert out.shape == (3, 10), "the downloaded artifact runs without the upload's data file"


def test_the_model_alone_says_how_to_send_its_data(stack: Stack, external_onnx: tuple[Path, Path]) -> None:
    model, _ = external_onnx
    with stack.client() as client, model.open("rb") as m:
        response = client.post("/v1/models", files={"file": (model.name, m)})
    assert response.status_code == 422, response.text
    assert "-F data=@" in response.json()["detail"], "the refusal names the two-file upload"
