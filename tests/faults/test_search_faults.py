"""A worker killed mid-search (PostgreSQL + Redis, real processes, 10 s leases): the reaper re-queues its
candidate, another worker finishes it, no candidate is lost or recorded twice, and the search completes."""

import time

import httpx

from tests.faults.conftest import Cluster, artifacts


def test_a_worker_killed_mid_search_loses_no_candidate_and_the_search_completes(
    cluster: Cluster, client: httpx.Client, models: dict[str, str]
) -> None:
    doomed = cluster.start_worker()
    dynamic = {"type": "quantize", "method": "dynamic"}
    response = client.post(
        "/v1/searches",
        json={
            "model_id": models["heavy"],
            "space": [{"passes": [dynamic]}, {"passes": [{**dynamic, "per_channel": False}]}],
            "evaluate": {"samples": 64, "latency": {"runs": 60, "warmup": 0}},
            "cache": False,
        },
    )
    assert response.status_code == 202, response.text
    search = response.json()
    first = search["candidates"][0]["job_id"]
    cluster.wait_running(first)
    doomed.kill()
    doomed.wait()
    cluster.start_worker()
    deadline = time.monotonic() + 300
    while (found := client.get(f"/v1/searches/{search['id']}").json())["status"] == "running":
        assert time.monotonic() < deadline, f"the search never completed: {found['progress']}"
        time.sleep(0.5)
    assert found["status"] == "succeeded" and [c["state"] for c in found["candidates"]] == ["succeeded"] * 2, found
    assert cluster.job_row(first)["attempts"] == 2, "the killed worker's candidate was taken over"
    for c in found["candidates"]:
        kinds = sorted(a["kind"] for a in artifacts(client, c["job_id"]))
        assert kinds == ["model", "report"], f"{c['label']}: one set of artifacts"
        assert len(cluster.stored_attempts(c["job_id"])) == 1, f"{c['label']}: one stored attempt"
    assert found["chosen_job_id"] in {c["job_id"] for c in found["candidates"]}, found["verdict"]
