"""Every accepted torch format converts to ONNX on the real worker, and the export matches the original."""

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
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.randn(2, 1, 8, 8)
    root = tmp_path_factory.mktemp("torch-formats")
    files = {"pt2": root / "cnn.pt2", "torchscript": root / "cnn.pt"}
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, files["pt2"])
    torch.jit.save(torch.jit.trace(model, x), files["torchscript"])
    return files


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_torch_upload_converts_and_quantizes(
    fmt: str, torch_files: dict[str, Path], client: httpx.Client, stack: Stack
) -> None:
    model = upload(client, torch_files[fmt])
    assert model["format"] == fmt
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
    assert report["steps"][0]["fidelity"]["cosine_min"] > 0.9999, f"the {fmt} export changed the outputs"
    assert report["original"]["latency"][0]["runtime"] == "torch"
