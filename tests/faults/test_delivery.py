"""Messages lost, duplicated or late, and the database going away (PostgreSQL + Redis we restart):
the database is the truth, so every job still runs, and runs once."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import ROOT
from tests.faults.conftest import Cluster, artifacts, process_alive, quick_job, slow_job, submit


def test_idempotency_key_retries_return_one_job_and_another_body_is_a_conflict(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    body = quick_job(models["mlp"])
    key = {"Idempotency-Key": f"faults-{time.time_ns()}"}
    with ThreadPoolExecutor(8) as pool:  # a client retrying in a hurry: the same request, concurrently
        responses = list(pool.map(lambda _: client.post("/v1/jobs", json=body, headers=key), range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1, "every retry names the same job"
    other = client.post("/v1/jobs", json={**body, "seed": 3}, headers=key)
    assert other.status_code == 409 and other.json()["code"] == "conflict", other.text
    assert client.post(f"/v1/jobs/{responses[0].json()['id']}/cancel").status_code == 200


def test_api_killed_between_commit_and_publish_the_sweep_publishes_the_job(
    cluster: Cluster, models: dict[str, str]
) -> None:
    # A real API process, killed (SIGKILL) right after its commit, before the message leaves.
    script = (
        "import json, os, signal, sys\n"
        "from app.db.session import get_sessionmaker\n"
        "from app.services.jobs import submit_job\n"
        "from app.settings import get_settings\n"
        "def publish(job_id, queue):\n"
        "    print(job_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "settings = get_settings()\n"
        "submit_job(get_sessionmaker(settings.effective_database_url)(), settings, publish, 'default',\n"
        "           json.loads(sys.argv[1]), None)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(quick_job(models["mlp"]))],
        cwd=ROOT,
        env={**os.environ, **cluster.env},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    job_id = proc.stdout.decode().strip()
    assert cluster.job_row(job_id)["status"] == "queued", "committed, never published"

    cluster.start_worker()
    row = cluster.wait_row(job_id, lambda r: r["status"] in ("succeeded", "failed"), 120, "an end")
    assert row["status"] == "succeeded" and row["attempts"] == 1, row["error_message"]


def test_redis_restarted_without_persistence_and_down_at_submit_every_job_runs_once(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    assert cluster.redis is not None
    queued = [submit(client, quick_job(models["mlp"]))["id"] for _ in range(5)]
    cluster.redis.stop()  # the five messages are gone with it
    t0 = time.monotonic()
    while_down = [submit(client, quick_job(models["mlp"]))["id"] for _ in range(3)]
    per_submit = (time.monotonic() - t0) / 3
    assert per_submit < 5, f"a submit with the broker down took {per_submit:.1f} s"
    cluster.redis.start()
    cluster.start_worker()
    cluster.start_worker()
    for job_id in queued + while_down:
        done = cluster.wait_done(client, job_id, timeout=240)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert len(artifacts(client, job_id)) == 2, "one set of artifacts per job"


def test_a_job_longer_than_the_visibility_timeout_has_one_effect(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    fast_redelivery = {"BROKER_VISIBILITY_TIMEOUT_S": "2"}
    first = cluster.start_worker(**fast_redelivery)  # type: ignore[arg-type]  # str overrides, not wait
    job = submit(client, slow_job(models["heavy"], runs=1000))
    cluster.wait_running(job["id"])
    time.sleep(3)  # past the visibility timeout: a consumer starting now restores the message (kombu)
    second = cluster.start_worker(**fast_redelivery)  # type: ignore[arg-type]
    log = second.log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while f"job {job['id']} is not queued" not in log.read_text():
        assert time.monotonic() < deadline, "the broker never redelivered the unacknowledged message"
        time.sleep(0.2)
    assert cluster.job_row(job["id"])["status"] == "running", "redelivered while the first worker held it"

    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert len(artifacts(client, job["id"])) == 2 and cluster.stored_attempts(job["id"]) == ["attempt-1"]
    assert first.poll() is None and f"job {job['id']}: attempt 1" in first.log.read_text()  # type: ignore[attr-defined]


def test_postgres_restart_mid_job_answers_503_then_the_job_finishes(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    assert cluster.pg is not None
    cluster.start_worker()
    job = submit(client, slow_job(models["heavy"], runs=200))
    cluster.wait_running(job["id"])
    cluster.pg.stop()
    try:
        down = client.get(f"/v1/jobs/{job['id']}")
        refused = client.post("/v1/jobs", json=quick_job(models["mlp"]))
    finally:
        cluster.pg.start()
    for response in (down, refused):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "database_unavailable" and response.headers["retry-after"]
    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert len(artifacts(client, job["id"])) == 2


def test_a_paused_worker_past_its_lease_cannot_commit(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    paused = cluster.start_worker()
    job = submit(client, slow_job(models["heavy"], runs=100))
    first = cluster.wait_running(job["id"])
    cluster.start_worker()
    os.kill(paused.pid, signal.SIGSTOP)
    cluster.wait_running(job["id"], attempt=2, timeout=60)  # lease expired, reaped, taken over
    deadline = time.monotonic() + 120
    while process_alive(first["child_pid"]):  # let attempt 1's pipeline finish: it has a result to offer
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(paused.pid, signal.SIGCONT)

    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert client.get(f"/v1/jobs/{job['id']}/report").json()["attempt"] == 2, "the live lease's result"
    assert len(artifacts(client, job["id"])) == 2
    deadline = time.monotonic() + 30
    log = paused.log  # type: ignore[attr-defined]
    while "lost its claim before recording" not in log.read_text():
        assert time.monotonic() < deadline, "the paused worker tried to commit: " + log.read_text()[-2000:]
        time.sleep(0.2)
    assert cluster.stored_attempts(job["id"]) == ["attempt-2"], "the late attempt's files were removed"
