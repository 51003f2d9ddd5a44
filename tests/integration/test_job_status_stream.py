"""Following a job without polling: the long-poll (`GET /v1/jobs/{id}?wait=N` with If-None-Match) answers
when the job changes, or 304 once N seconds pass unchanged; the event stream (`GET /v1/jobs/{id}/events`)
sends the job at every change and a final `end` event. The changes come from other processes (the worker,
another API replica), so both are proved end to end on every backend."""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import follow
from tests.conftest import Stack, start_api_process, upload

QUANTIZE = [{"type": "quantize", "method": "dynamic"}]


@pytest.fixture(scope="module")
def replica(stack: Stack) -> Iterator[str]:
    """A second API process on the same database and broker, as behind a load balancer."""
    api, url = start_api_process({**os.environ, **stack.env}, stack.home / "logs" / "replica-status.log")
    yield url
    api.terminate()
    try:
        api.wait(timeout=30)
    except subprocess.TimeoutExpired:
        api.kill()


@pytest.fixture(scope="module")
def heavy_id(stack: Stack, heavy_onnx: Path) -> str:
    with stack.client() as client:
        return str(upload(client, heavy_onnx)["id"])


def _submit(client: httpx.Client, model_id: str, runs: int) -> dict[str, Any]:
    spec = {
        "model_id": model_id,
        "passes": QUANTIZE,
        "evaluate": {"samples": 16, "latency": {"runs": runs}},
        "cache": False,  # every job here must really run, whatever ran before in the session
    }
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _events(response: httpx.Response) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of each server-sent event; comments (keep-alives) are skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield fields.get("event", "message"), fields.get("id", ""), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def test_a_long_poll_answers_when_the_job_changes(client: httpx.Client, heavy_id: str) -> None:
    job = _submit(client, heavy_id, runs=100)
    first = client.get(f"/v1/jobs/{job['id']}")
    tag = first.headers["etag"]
    started = time.monotonic()
    changed = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, headers={"If-None-Match": tag}, timeout=60)
    waited = time.monotonic() - started
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != tag, "a long-poll answered 200 with the ETag it was asked to wait past"
    seen = (changed.json()["status"], changed.json()["progress"], changed.json()["current_pass"])
    assert seen != (first.json()["status"], first.json()["progress"], first.json()["current_pass"]), seen
    assert waited < 29, f"the long-poll waited {waited:.1f} s although the job changed"


def test_the_client_follows_a_job_to_its_end_one_request_per_change(client: httpx.Client, heavy_id: str) -> None:
    job = _submit(client, heavy_id, runs=100)
    states = list(follow(client, job["id"]))
    assert states[-1]["status"] == "succeeded", states[-1]
    assert any(s["status"] == "running" for s in states), [s["status"] for s in states]
    views = [(s["status"], s["progress"], s["current_pass"]) for s in states]
    assert len(set(views)) == len(views), f"follow() answered a state twice (a poll, not a change): {views}"


def test_an_unchanged_job_answers_304_after_the_wait_and_a_cancel_on_another_replica_wakes_it(
    client: httpx.Client, heavy_id: str, replica: str, stack: Stack
) -> None:
    busy = _submit(client, heavy_id, runs=10_000)  # keeps the one worker busy, so the next job stays queued
    waiting = _submit(client, heavy_id, runs=100)
    tag = client.get(f"/v1/jobs/{waiting['id']}").headers["etag"]
    started = time.monotonic()
    unchanged = client.get(f"/v1/jobs/{waiting['id']}", params={"wait": 1}, headers={"If-None-Match": tag})
    assert unchanged.status_code == 304, unchanged.text
    assert time.monotonic() - started >= 1, "the long-poll did not wait for the job to change"
    assert unchanged.headers["etag"] == tag
    with httpx.Client(base_url=replica, headers=client.headers, timeout=60) as other:
        assert other.post(f"/v1/jobs/{waiting['id']}/cancel").status_code == 200
    woken = client.get(f"/v1/jobs/{waiting['id']}", params={"wait": 30}, headers={"If-None-Match": tag}, timeout=60)
    assert woken.status_code == 200 and woken.json()["status"] == "cancelled", woken.text
    assert client.post(f"/v1/jobs/{busy['id']}/cancel").status_code == 200
    stack.wait_for(client, busy["id"], timeout=120)


def test_the_event_stream_sends_progress_and_a_final_event(client: httpx.Client, heavy_id: str, replica: str) -> None:
    job = _submit(client, heavy_id, runs=100)
    with (
        httpx.Client(base_url=replica, headers=client.headers, timeout=120) as other,
        other.stream("GET", f"/v1/jobs/{job['id']}/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(_events(response))
    names = [name for name, _, _ in events]
    assert names[-1] == "end" and set(names[:-1]) <= {"status"}, names
    assert events[-1][2]["status"] == "succeeded", events[-1][2]
    running = [data for name, _, data in events if name == "status" and data["status"] == "running"]
    assert running, f"no event showed the job running: {[(n, d['status'], d['progress']) for n, _, d in events]}"
    assert any(0 < data["progress"] < 1 for data in running), "no event carried the progress of a running job"
    ids = [event_id for _, event_id, _ in events]
    assert len(set(ids)) == len(ids), f"two events carried the same job state (ETag): {ids}"
