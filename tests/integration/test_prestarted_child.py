"""Each job's pipeline process is started before its job arrives (workers.sandbox.Prestart): the job does not
wait for torch, onnxruntime and the passes to load; a prestarted process that died is never used, the job
starts a fresh one, and the worker prestarts the next."""

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, upload

SPEC = {"passes": [{"type": "quantize", "method": "dynamic"}], "input_shapes": {"x": [4, 64]}, "cache": False}


@pytest.fixture(scope="module")
def mlp_id(stack: Stack, mlp_onnx: Path) -> str:
    with stack.client() as c:
        return str(upload(c, mlp_onnx)["id"])


def waiting_children(worker_pid: int) -> list[int]:
    """The worker's child processes (each a pipeline's sandbox); between jobs, only the prestarted one."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return [int(pid) for pid in children if b"workers.child" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def prestarted_child(stack: Stack, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while not (found := waiting_children(stack.worker.pid)):
        assert time.monotonic() < deadline, "the worker prestarted no pipeline process for its next job"
        time.sleep(0.2)
    return found[0]


def run_job(client: httpx.Client, stack: Stack, model_id: str) -> dict:
    job = client.post("/v1/jobs", json={**SPEC, "model_id": model_id}).json()
    assert stack.wait_for(client, job["id"])["status"] == "succeeded"
    return client.get(f"/v1/jobs/{job['id']}/report").json()


def test_a_job_runs_in_the_process_prestarted_for_it(client: httpx.Client, stack: Stack, mlp_id: str) -> None:
    prestarted_child(stack)
    report = run_job(client, stack, mlp_id)
    assert report["startup"]["prestarted"] is True, "the job should not have waited for its libraries to load"
    assert report["startup"]["imports_s"] > 0, "the report says how long loading the libraries took"


def test_a_prestarted_process_that_died_is_replaced(client: httpx.Client, stack: Stack, mlp_id: str) -> None:
    os.killpg(prestarted_child(stack), signal.SIGKILL)
    report = run_job(client, stack, mlp_id)
    assert report["startup"]["prestarted"] is False, "a dead prestarted process must not take the job"
    assert prestarted_child(stack), "after the job the worker prestarts the next one"
