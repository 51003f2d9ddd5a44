"""The embedded mode under load: SQLite and the filesystem broker, four workers and the API racing over
the same jobs. No job is claimed twice and no client ever reads "database is locked"."""

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import upload
from tests.faults.conftest import FAST_LEASES, Cluster, quick_job, start_api

JOBS = 32
WORKERS = 4


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("embedded-home")
    logs = home / "logs"
    logs.mkdir()
    env = {"SQUEEZE_HOME": str(home), "QUEUE_PREFIX": f"e{uuid.uuid4().hex[:8]}-", **FAST_LEASES}
    stack = start_api(env, logs, f"sqlite:///{home / 'squeeze.db'}")
    cluster = Cluster(stack, env, logs, pg=None, redis=None)
    yield cluster
    cluster.stop_workers()
    stack.api.terminate()
    stack.api.wait(timeout=30)


def test_four_workers_and_the_api_race_without_double_claims_or_lock_errors(embedded: Cluster, mlp_onnx: Path) -> None:
    with embedded.stack.client() as client:
        body = quick_job(str(upload(client, mlp_onnx)["id"]))
        workers = [embedded.start_worker(wait=False) for _ in range(WORKERS)]
        for worker in workers:
            embedded.wait_ready(worker)

        def submit_and_poll(_: int) -> list[httpx.Response]:
            submitted = client.post("/v1/jobs", json=body)
            return [
                submitted,
                client.get("/v1/jobs", params={"limit": 20}),
                client.get(f"/v1/jobs/{submitted.json().get('id')}"),
            ]

        with ThreadPoolExecutor(8) as pool:
            responses = [r for rs in pool.map(submit_and_poll, range(JOBS)) for r in rs]
        failures = [r.text for r in responses if r.status_code >= 300]
        assert not failures, f"{len(failures)} requests failed while workers wrote, e.g. {failures[:3]}"
        job_ids = [r.json()["id"] for r in responses if r.request.method == "POST"]

        for job_id in job_ids:
            done = embedded.wait_done(client, job_id, timeout=400)
            assert done["status"] == "succeeded", done
            assert len(client.get(f"/v1/jobs/{job_id}/artifacts").json()) == 2, "one set of artifacts"
        rows = [embedded.job_row(job_id) for job_id in job_ids]
        assert [r["fence"] for r in rows] == [1] * JOBS, "every job was claimed exactly once"
        assert len({r["worker"] for r in rows}) > 1, "the workers shared the load"
    logs = "".join(p.read_text(errors="replace") for p in embedded.logs.glob("*.log"))
    assert "database is locked" not in logs, "a SQLite lock error reached a worker or the API"
