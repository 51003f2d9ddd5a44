"""/metrics, as Prometheus scrapes it: request counts by route template (not by id), jobs by status and queue
read from the database, and the age of the oldest queued job."""

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack, upload


def _samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_requests_and_jobs(stack: Stack, client: httpx.Client, mlp_onnx: Path) -> None:
    model = upload(client, mlp_onnx)
    job = client.post(
        "/v1/jobs",
        json={
            "model_id": model["id"],
            "passes": [{"type": "quantize", "method": "dynamic"}],
            "input_shapes": {"x": [2, 64]},
            "evaluate": {"samples": 4, "latency": {"runs": 2, "warmup": 0}},
        },
    ).json()
    assert stack.wait_for(client, job["id"])["status"] == "succeeded"
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:  # Prometheus scrapes without a key
        samples = _samples(anonymous)
    polls = [
        v
        for (name, labels), v in samples.items()
        if name == "squeeze_http_requests_total"
        and ("route", "/v1/jobs/{job_id}") in labels
        and ("status", "200") in labels
    ]
    assert polls and polls[0] >= 1, "polling a job is counted under its route template"
    assert not any(job["id"] in str(labels) for _, labels in samples), "no series per object id"
    succeeded = [
        v for (name, labels), v in samples.items() if name == "squeeze_jobs" and ("status", "succeeded") in labels
    ]
    assert succeeded and sum(succeeded) >= 1, "the succeeded job is in the jobs gauge"
    assert ("squeeze_oldest_queued_job_age_seconds", ()) in samples
