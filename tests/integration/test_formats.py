"""TorchScript, where allowed (the test stack isolates its jobs and allows it), converts to ONNX on the real
worker, and the export matches the original."""

from pathlib import Path

import httpx
import pytest
import torch

from tests.conftest import Stack, upload


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.randn(2, 1, 8, 8)
    path = tmp_path_factory.mktemp("torch-formats") / "cnn.pt"
    torch.jit.save(torch.jit.trace(model, x), path)
    return path


def test_torchscript_upload_converts_and_quantizes(torchscript_file: Path, client: httpx.Client, stack: Stack) -> None:
    model = upload(client, torchscript_file)
    assert model["format"] == "torchscript"
    response = client.post(
        "/v1/jobs",
        json={
            "model_id": model["id"],
            "passes": [{"type": "convert", "to": "onnx"}, {"type": "quantize", "method": "dynamic"}],
            "input_shapes": {model["inputs"][0]["name"]: [4, 1, 8, 8]},
            "evaluate": {"latency": {"runs": 5}},
        },
    )
    assert response.status_code == 202, response.text
    job = stack.wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["steps"][0]["fidelity"]["cosine_min"] > 0.9999, "the TorchScript export changed the outputs"
    assert report["original"]["latency"][0]["runtime"] == "torch"
