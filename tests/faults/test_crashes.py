"""Pipeline processes and workers dying mid-job (PostgreSQL + Redis, real processes, 10 s leases):
no job lost, none recorded twice, a crash loop ends in a failed job, the worker lives on."""

import os
import signal
import time

import httpx

from tests.faults.conftest import Cluster, artifacts, process_alive, quick_job, slow_job, submit


def test_child_killed_mid_job_succeeds_on_attempt_two_with_one_set_of_artifacts(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    cluster.start_worker()
    job = submit(client, slow_job(models["heavy"]))
    first = cluster.wait_running(job["id"])
    os.kill(first["child_pid"], signal.SIGKILL)

    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2, "the killed attempt was retried once"
    kinds = sorted(a["kind"] for a in artifacts(client, job["id"]))
    assert kinds == ["model", "report"], "one set of artifacts"
    assert cluster.stored_attempts(job["id"]) == ["attempt-2"], "only the winning attempt's files are stored"
    assert client.get(f"/v1/jobs/{job['id']}/report").json()["attempt"] == 2


def test_a_pipeline_that_crashes_every_time_fails_after_max_attempts_and_the_worker_lives(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    worker = cluster.start_worker()
    job = submit(client, slow_job(models["heavy"]))
    for attempt in (1, 2, 3):
        row = cluster.wait_running(job["id"], attempt)
        os.kill(row["child_pid"], signal.SIGSEGV)  # as a segfault in a native library would
    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "crashed", done
    assert done["attempts"] == 3 and "SIGSEGV" in done["error"]["message"], done["error"]
    assert artifacts(client, job["id"]) == []
    assert worker.poll() is None, "the worker survives its pipeline's crashes"
    after = submit(client, quick_job(models["mlp"]))
    assert cluster.wait_done(client, after["id"])["status"] == "succeeded", "the worker takes the next job"


def test_a_model_that_allocates_without_bound_fails_out_of_memory_and_the_worker_lives(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    worker = cluster.start_worker()
    job = submit(
        client,
        {
            "model_id": models["balloon"],
            "passes": [{"type": "optimize"}],
            "input_shapes": {"x": [2, 64]},
            "evaluate": {"samples": 2},
        },
    )
    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "out_of_memory", done
    assert done["attempts"] == 1, "a clean out-of-memory failure is deterministic: not retried"
    assert worker.poll() is None
    after = submit(client, quick_job(models["mlp"]))
    assert cluster.wait_done(client, after["id"])["status"] == "succeeded", "the worker takes the next job"


def test_worker_killed_mid_job_another_worker_finishes_it_within_lease_and_reaper_interval(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    doomed = cluster.start_worker()
    job = submit(client, slow_job(models["heavy"], runs=60))
    first = cluster.wait_running(job["id"])
    doomed.kill()
    doomed.wait()
    killed_at = time.monotonic()
    cluster.start_worker()

    second = cluster.wait_running(job["id"], attempt=2)
    taken_over = time.monotonic() - killed_at
    lease, reaper = float(cluster.env["LEASE_S"]), float(cluster.env["REAPER_INTERVAL_S"])
    # + the time a fresh worker needs to start on two busy cores
    assert taken_over < lease + reaper + 20, f"taken over after {taken_over:.1f} s"
    assert not process_alive(first["child_pid"]), "the dead worker's pipeline died with it"
    assert second["child_pid"] != first["child_pid"]
    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert sorted(a["kind"] for a in artifacts(client, job["id"])) == ["model", "report"]


def test_sigterm_hands_the_running_job_back_and_nothing_stays_running(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    stopping = cluster.start_worker()
    job = submit(client, slow_job(models["heavy"], runs=400))
    cluster.wait_running(job["id"])
    stopping.terminate()
    assert stopping.wait(timeout=60) == 0, "warm shutdown exits cleanly after the grace period"
    row = cluster.job_row(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0, "handed back, the attempt not counted"
    cluster.start_worker()
    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done


def test_a_job_past_its_time_limit_fails_with_timeout_and_its_process_group_is_killed(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    worker = cluster.start_worker(JOB_TIMEOUT_S="4")
    job = submit(client, slow_job(models["heavy"], runs=5000))
    row = cluster.wait_running(job["id"])
    done = cluster.wait_done(client, job["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "timeout", done
    assert done["attempts"] == 1, "a timeout is the job's own: not retried"
    assert not process_alive(row["child_pid"]), "the pipeline was killed with its group"
    assert worker.poll() is None
