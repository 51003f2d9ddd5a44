"""Adding a pass is adding one folder: a toy pass written into passes/ (a config.py and a run.py, nothing
else anywhere) is offered by the API, planned, run by a worker and reported, through the real stack."""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

import passes
from tests.conftest import S3Server, backend_env, create_api_key, start_api_process, start_worker, upload

FOLDER = Path(passes.__file__).parent / "scale_outputs"
CONFIG = '''"""scale_outputs: a toy pass for the test that adding a pass means adding its folder."""

from typing import Literal

from pydantic import Field

from passes.base import PassConfig, Takes


class ScaleOutputs(PassConfig):
    type: Literal["scale_outputs"]
    factor: float = Field(gt=0, description="every output is multiplied by this")

    def takes(self) -> Takes:
        return "onnx"


Config = ScaleOutputs
'''
RUN = '''"""Multiply each output of an ONNX model by the config's factor."""

import onnx
from onnx import helper, numpy_helper
import numpy as np

from passes.scale_outputs.config import Config


def run(config: Config, handle, ctx):
    model = onnx.load(str(handle.path))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(config.factor, np.float32), "scale_factor"))
    for output in graph.output:
        for node in graph.node:
            node.output[:] = [f"{output.name}_unscaled" if o == output.name else o for o in node.output]
        graph.node.append(helper.make_node("Mul", [f"{output.name}_unscaled", "scale_factor"], [output.name]))
    path = ctx.path("model.onnx")
    onnx.save(model, str(path))
    ctx.metrics["scaled_outputs"] = len(graph.output)
    return handle.with_onnx(path)
'''


@pytest.fixture(scope="module")
def toy_stack(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server | None) -> Iterator[tuple[str, str]]:
    """A stack started after the folder was added; the folder is removed when the test ends."""
    from app.db.migrate import upgrade_to_head

    assert not FOLDER.exists(), f"{FOLDER} is left from an earlier run: remove it"
    FOLDER.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (FOLDER / "__init__.py").write_text("")
        (FOLDER / "config.py").write_text(CONFIG)
        (FOLDER / "run.py").write_text(RUN)
        home = tmp_path_factory.mktemp("toy-home")
        env = backend_env(home, s3_server)
        # On PostgreSQL it shares the suite's database (its own tenant and queues); on SQLite its own file.
        database_url = env.get("DATABASE_URL", f"sqlite:///{home / 'squeeze.db'}")
        upgrade_to_head(database_url)
        api, url = start_api_process({**os.environ, **env}, home / "api.log", "/readyz")
        procs.append(api)
        procs.append(start_worker(env, home / "worker.log", "toy"))
        yield url, create_api_key(database_url, "toy")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(FOLDER, ignore_errors=True)


def test_a_pass_added_as_one_folder_runs_through_the_api(
    toy_stack: tuple[str, str], mlp_onnx: Path, tmp_path: Path
) -> None:
    url, key = toy_stack
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        openapi = client.get("/openapi.json").json()
        assert "ScaleOutputs" in openapi["components"]["schemas"], "the spec's union offers the new pass"
        refused = client.post("/v1/jobs", json={"model_id": "x", "passes": [{"type": "scale_outputs"}]})
        assert refused.status_code == 422 and "factor" in refused.text, "its config validates at submit"
        model_id = upload(client, mlp_onnx)["id"]
        spec = {
            "model_id": model_id,
            "passes": [{"type": "scale_outputs", "factor": 2.0}],
            "input_shapes": {"x": [4, 64]},
            "evaluate": {"latency": {"runs": 5}},
        }
        job = client.post("/v1/jobs", json=spec).json()
        assert [s["label"] for s in job["plan"]["steps"]] == ["scale_outputs"], job
        done = _wait(client, job["id"])
        assert done["status"] == "succeeded", done["error"]
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        assert report["steps"][0]["metrics"] == {"scaled_outputs": 1}
        assert report["result"]["fidelity"]["cosine_min"] > 0.9999, "scaling keeps the direction of the outputs"
        artifact = next(a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json() if a["kind"] == "model")
        path = tmp_path / "scaled.onnx"
        path.write_bytes(client.get(artifact["download_url"]).content)
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    (original,) = ort.InferenceSession(str(mlp_onnx)).run(None, {"x": x})
    (scaled,) = ort.InferenceSession(str(path)).run(None, {"x": x})
    assert np.allclose(scaled, 2.0 * original, atol=1e-5), "the artifact is the original scaled by the factor"


def _wait(client: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end")
