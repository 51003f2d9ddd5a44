"""The GPU passes as a user runs them: a small BERT (a Hugging Face folder) uploaded to the real API, jobs with
`device: cuda` run by a real worker on the gpu queue (`squeeze worker --queues gpu`), each ending in a .pt2
and its AOTInductor package, whose report times the original and the result on CUDA, eager, compiled and as
the package, with peak CUDA memory per row. Both artifacts are downloaded and run here on CUDA. Run on the
GPU machine: pytest -m gpu tests/gpu -s."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.conftest import ROOT, backend_env, create_api_key, start_api_process, upload

pytestmark = pytest.mark.gpu
JOBS = {
    "fp8": {"type": "quantize", "method": "fp8"},
    "fp8_static": {
        "type": "quantize",
        "method": "fp8",
        "activations": "static",
        "scaling": "per_tensor",
        "calibration": {"dataset_id": "TRAIN", "samples": 64},
    },
    "int8_weight_only": {"type": "quantize", "method": "int8_weight_only"},
    "int4_weight_only": {"type": "quantize", "method": "int4_weight_only", "group_size": 64},
    "semi_structured_2_4": {"type": "prune", "method": "semi_structured_2_4", "importance": "wanda"},
    "semi_structured_2_4_fp8": {"type": "prune", "method": "semi_structured_2_4", "dtype": "fp8"},
    "semi_structured_2_4+finetune": {
        "type": "prune",
        "method": "semi_structured_2_4",
        "finetune": {"dataset_id": "TRAIN", "epochs": 2, "batch_size": 16, "lr": 1e-4},
    },
}

NO_PACKAGE = {
    "semi_structured_2_4_fp8": "AOTInductor compiles it, but its proxy executor fails to run torchao's CUTLASS op "
    "(torch 2.11, H200: 'run_func_(...) API call failed')"
}
"""jobs whose AOTInductor package does not run: the job delivers the .pt2 alone, with the reason in result.aoti"""


@pytest.fixture(scope="module")
def gpu_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The embedded API and one worker started as `squeeze worker --queues gpu --gpus all` would (one per GPU)."""
    home = tmp_path_factory.mktemp("gpu-home")
    env = {**os.environ, **backend_env(home, None)}
    if shutil.which("bwrap") is None:  # the GPU machine has no bubblewrap: jobs run in the unisolated child
        env["JOB_ISOLATION"] = "off"
    env.pop("ALLOW_TORCHSCRIPT_UPLOADS", None)
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True)
    api, url = start_api_process(env, home / "api.log", "/readyz")
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--queues", "gpu", "--gpus", "all"],
        cwd=ROOT,
        env=env,
        stdout=(home / "worker.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    key = create_api_key(f"sqlite:///{home / 'squeeze.db'}", "gpu")
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        yield client
    for proc in (worker, api):
        proc.terminate()
        proc.wait(timeout=60)
    print((home / "worker.log").read_text()[-3000:])


def wait_for(client: httpx.Client, job_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


def upload_tokens(client: httpx.Client) -> str:
    """A training set of token ids: what the 2:4 fine-tune trains on (MSE to the unpruned model's outputs)."""
    ids = np.random.default_rng(0).integers(0, 2000, (128, 128))
    buffer = io.BytesIO()
    np.savez(buffer, input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids))
    response = client.post("/v1/datasets", files={"file": ("train.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def small_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=2000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024
    )
    BertModel(config).eval().save_pretrained(str(folder / "bert"), safe_serialization=True)
    path = folder / "bert.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted((folder / "bert").rglob("*")):
            zf.write(file, file.relative_to(folder))
    return path


@pytest.fixture(scope="module")
def uploaded(gpu_api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The BERT folder and the token training set, uploaded once for every job."""
    model = upload(gpu_api, small_bert(tmp_path_factory.mktemp("bert")))
    return {"model": model["id"], "train": upload_tokens(gpu_api)}


@pytest.mark.parametrize("name", list(JOBS))
def test_gpu_job_through_the_api(name: str, gpu_api: httpx.Client, uploaded: dict[str, str], tmp_path: Path) -> None:
    spec = {
        "model_id": uploaded["model"],
        "device": "cuda",
        "input_shapes": {"input_ids": [16, 128]},
        "evaluate": {"latency": {"batch_sizes": [16], "runs": 20, "warmup": 3}},
        "passes": [json.loads(json.dumps(JOBS[name]).replace("TRAIN", uploaded["train"]))],
    }
    response = gpu_api.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = wait_for(gpu_api, job_id)
    assert job["status"] == "succeeded", f"{name}: {job.get('error')}"
    report = gpu_api.get(f"/v1/jobs/{job_id}/report").json()
    result = report["result"]
    assert result["format"] == "pt2" and "torch.export.load" in result["how_to_load"]
    for row in result["latency"] + report["original"]["latency"]:
        assert (row["device"], row["timer"], row["memory_kind"]) == ("cuda", "cuda_events", "cuda_max_allocated")
        assert row["peak_memory_bytes"] > 0
    compiled = result["latency_compiled"]
    assert [r["batch_size"] for r in compiled] == [16], f"{name}: no compiled rows"
    assert all(r["compile_seconds"] > 0 and r["compiled"] == "torch.compile" for r in compiled)
    artifacts = {a["name"]: a for a in gpu_api.get(f"/v1/jobs/{job_id}/artifacts").json()}
    if "fp8" in name and "semi_structured" in name:
        assert result["how_to_load"].startswith("import torchao"), result["how_to_load"]
        import torchao  # noqa: F401  (as how_to_load says: its kernels are torch ops once imported)
    content = gpu_api.get(artifacts["model.pt2"]["download_url"]).content
    loaded = torch.export.load(io.BytesIO(content)).module()
    # a GPU program takes CUDA tensors; fp8 keeps _scaled_mm's rule that the rows (batch x sequence) be a
    # multiple of 16, so it is called at the job's batch
    ids = torch.randint(0, 2000, (16, 128), device="cuda")
    feeds = (ids, torch.zeros_like(ids), torch.ones_like(ids))  # the folder's inputs, in order
    out = loaded(*feeds)
    assert out.shape == (16, 128, 256) and out.dtype == torch.float32
    aoti = result["aoti"]
    if aoti.get("error"):  # the job says why and delivers the .pt2 alone
        assert name in NO_PACKAGE and aoti["device"] == "cuda", f"{name}: no AOTInductor package: {aoti}"
        assert "model.aoti.pt2" not in artifacts
        print(json.dumps({name: {"aoti_error": aoti["error"][:300]}}))
        return
    assert aoti["device"] == "cuda" and aoti["artifact_id"] == artifacts["model.aoti.pt2"]["id"]
    assert aoti["fidelity"]["cosine_min"] > 0.99, aoti["fidelity"]
    assert [(r["compiled"], r["device"], r["batch_size"]) for r in aoti["latency"]] == [("aotinductor", "cuda", 16)]
    package = tmp_path / f"{name}.aoti.pt2"
    package.write_bytes(gpu_api.get(artifacts["model.aoti.pt2"]["download_url"]).content)
    packaged = torch._inductor.aoti_load_package(str(package))(*feeds)
    agreement = torch.nn.functional.cosine_similarity(packaged.flatten(), out.flatten(), dim=0)
    assert float(agreement) > 0.999, f"{name}: the package does not compute what the .pt2 does: {agreement}"
    if "finetune" in name:
        finetune = report["steps"][0]["metrics"]["finetune"]
        assert finetune["device"] == "cuda" and finetune["epoch_losses"][-1] < finetune["epoch_losses"][0]
    figures = {
        "cosine": result["fidelity"]["cosine_mean"],
        "eager_p50_ms": {r["batch_size"]: r["p50_ms"] for r in result["latency"]},
        "compiled_p50_ms": {r["batch_size"]: r["p50_ms"] for r in compiled},
        "compile_seconds": [r["compile_seconds"] for r in compiled],
        "aoti_p50_ms": {r["batch_size"]: r["p50_ms"] for r in aoti["latency"]},
        "aoti_compile_seconds": aoti["compile_seconds"],
        "peak_memory_bytes": {r["batch_size"]: r["peak_memory_bytes"] for r in result["latency"]},
        "original_eager_p50_ms": {r["batch_size"]: r["p50_ms"] for r in report["original"]["latency"]},
        "memory_bytes": (report["original"].get("memory_bytes"), result.get("memory_bytes")),
    }
    print(json.dumps({name: figures}, indent=1))
