"""Limits that hold across replicas: two API processes on the same database and broker, one API key.
A tenant's active-job cap and a key's rate are shared, so a balancer spreading requests over both
processes lets the tenant through no more than one process would (Redis buckets on the postgres-redis
backends, `rate_buckets` rows on the embedded one)."""

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, start_api_process, upload

BURST, CAP = 10, 2
SHARED_ENV = {"RATE_LIMIT_BURST": str(BURST), "RATE_LIMIT_PER_S": "0.1", "MAX_ACTIVE_JOBS_PER_TENANT": str(CAP)}


@pytest.fixture(scope="module")
def replicas(stack: Stack) -> Iterator[list[str]]:
    """Two API-only processes with the same settings. Their queue is their own, so no worker takes their
    jobs: accepted jobs stay queued and keep counting against the cap."""
    env = {**os.environ, **stack.env, **SHARED_ENV, "QUEUE_PREFIX": f"rep{uuid.uuid4().hex[:6]}-"}
    started: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for name in ("a", "b"):
            api, url = start_api_process(env, stack.home / "logs" / f"replica-{name}.log")
            started.append(api)
            urls.append(url)
        yield urls
    finally:
        for api in started:
            api.terminate()
            api.wait(timeout=30)


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def test_the_active_job_cap_holds_across_two_api_processes(stack: Stack, replicas: list[str], mlp_onnx: Path) -> None:
    token = stack.key(f"capped-{uuid.uuid4().hex[:6]}")
    with _client(replicas[0], token) as client:
        model = upload(client, mlp_onnx)
    spec = {"model_id": model["id"], "passes": [{"type": "optimize"}], "input_shapes": {"x": [2, 64]}, "cache": False}
    attempts = 6
    start = threading.Barrier(attempts)

    def submit(i: int) -> httpx.Response:
        with _client(replicas[i % 2], token) as client:
            start.wait()
            return client.post("/v1/jobs", json=spec)

    with ThreadPoolExecutor(attempts) as pool:
        responses = list(pool.map(submit, range(attempts)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * CAP + [429] * (attempts - CAP), [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 429} == {"too_many_jobs"}
    with _client(replicas[1], token) as client:
        for accepted in (r.json() for r in responses if r.status_code == 202):
            assert client.post(f"/v1/jobs/{accepted['id']}/cancel").status_code == 200


def test_the_rate_limit_holds_across_two_api_processes(stack: Stack, replicas: list[str]) -> None:
    token = stack.key(f"chatty-{uuid.uuid4().hex[:6]}")
    with _client(replicas[0], token) as a, _client(replicas[1], token) as b:
        answers = [(name, client.get("/v1/models")) for _ in range(BURST) for name, client in (("a", a), ("b", b))]
    allowed = [name for name, r in answers if r.status_code == 200]
    refused = [name for name, r in answers if r.status_code == 429]
    # One token may refill (0.1/s) while the 20 requests run; a per-process limit would allow all 20.
    assert BURST <= len(allowed) <= BURST + 1, f"{len(allowed)} of {len(answers)} requests got through"
    assert set(refused) == {"a", "b"}, "both processes refuse once the shared bucket is empty"
    assert all(int(r.headers["retry-after"]) >= 1 for _, r in answers if r.status_code == 429)
