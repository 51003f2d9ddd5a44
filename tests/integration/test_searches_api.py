"""Searches through the real API, workers, database and store, on small models: the budget caps the
candidates, each candidate is a real job, the choice is the best feasible one by every candidate's own report,
an impossible constraint ends with no choice and says why, the wall-time budget cuts what is still going and
keeps what finished, cancelling cascades, and two workers run candidates of one search at once."""

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db.models import Job
from app.db.session import session_scope
from app.schemas.searches import Point
from app.services import pareto
from tests.conftest import Stack, start_worker, upload

QUICK = {"latency": {"runs": 3, "warmup": 0}, "samples": 4}
SLOW = {"latency": {"runs": 400, "warmup": 0}, "samples": 64}
"""Many timed runs of the 4x1024x1024 model: candidates that are still running seconds later."""


@pytest.fixture(scope="module")
def models(stack: Stack, mlp_onnx: Path, heavy_onnx: Path) -> dict[str, str]:
    with stack.client() as client:
        return {"mlp": upload(client, mlp_onnx)["id"], "heavy": upload(client, heavy_onnx)["id"]}


def start(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/searches", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/searches/{response.json()['id']}"
    return dict(response.json())


def wait_search(client: httpx.Client, search_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        search = client.get(f"/v1/searches/{search_id}").json()
        if search["status"] != "running":
            return dict(search)
        time.sleep(0.5)
    raise AssertionError(f"search {search_id} still running after {timeout}s: {search['progress']}")


def wait_until(check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def own_points(client: httpx.Client, search: dict[str, Any]) -> list[Point]:
    """Every succeeded candidate's point, read here from its own job report."""
    found = []
    for c in search["candidates"]:
        if client.get(f"/v1/jobs/{c['job_id']}").json()["status"] == "succeeded":
            report = client.get(f"/v1/jobs/{c['job_id']}/report").json()
            point = pareto.point_of(c["job_id"], c["label"], report)
            assert point is not None, f"{c['label']} finished without latency or quality"
            found.append(point)
    return found


def test_a_budget_of_three_runs_three_real_jobs_and_chooses_the_fastest_feasible(
    client: httpx.Client, models: dict[str, str]
) -> None:
    body = {
        "model_id": models["mlp"],
        "budget": {"max_candidates": 3},
        "evaluate": QUICK,
        "input_shapes": {"x": [2, 64]},
        "constraints": {"min_cosine": 0.95},
        "seed": 2101,
    }
    search = start(client, body)
    assert len(search["candidates"]) == 3, "the budget caps the proposed space"
    assert all(c["reason"] for c in search["candidates"]), "every candidate says why it is there"
    assert any("no int4" in n for n in search["notes"]), f"the MLP's Gemm graph gets no int4: {search['notes']}"
    for c in search["candidates"]:
        job = client.get(f"/v1/jobs/{c['job_id']}").json()
        assert job["search_id"] == search["id"] and job["candidate"] == c["label"], "each candidate is a real job"
    done = wait_search(client, search["id"])
    assert done["status"] == "succeeded" and done["progress"]["total"] == 3, done["progress"]
    points = own_points(client, done)
    feasible = [p for p in points if p.feasible]
    assert feasible, f"no candidate met min_cosine 0.95: {done['verdict']}"
    fastest = min(feasible, key=lambda p: (p.p50_ms, p.size_bytes))
    assert done["chosen_job_id"] == fastest.job_id, f"chose {done['chosen_job_id']}, fastest feasible {fastest}"
    front_ids = {p["job_id"] for p in done["front"]}
    for p in points:
        dominated = any(pareto.dominates(q, p) for q in points)
        assert (p.job_id in front_ids) == (not dominated), f"{p.label}: on the front exactly when non-dominated"
    assert done["chosen_job_id"] in done["verdict"], done["verdict"]


def test_an_impossible_constraint_ends_succeeded_with_no_choice_and_says_why(
    client: httpx.Client, models: dict[str, str]
) -> None:
    body = {
        "model_id": models["mlp"],
        "space": [{"passes": [{"type": "quantize", "method": "dynamic"}]}, {"passes": [{"type": "optimize"}]}],
        "evaluate": QUICK,
        "input_shapes": {"x": [2, 64]},
        "constraints": {"min_size_ratio": 100},
        "seed": 2102,
    }
    done = wait_search(client, start(client, body)["id"])
    assert done["status"] == "succeeded" and done["chosen_job_id"] is None, done
    assert "none met every constraint" in done["verdict"] and "min_size_ratio" in done["verdict"], done["verdict"]


def test_the_wall_time_budget_cuts_what_is_going_and_keeps_what_finished(
    client: httpx.Client, stack: Stack, models: dict[str, str]
) -> None:
    quick = [{"type": "quantize", "method": "dynamic"}]
    earlier: dict[str, Any] = {"model_id": models["mlp"], "passes": quick, "evaluate": QUICK, "seed": 2103}
    earlier["input_shapes"] = {"x": [2, 64]}
    job = client.post("/v1/jobs", json=earlier).json()
    assert stack.wait_for(client, job["id"])["status"] == "succeeded"
    body = {
        "model_id": models["mlp"],
        "space": [
            {"label": "cached", "passes": quick},
            {"passes": [{"type": "optimize"}]},
            {"passes": [{"type": "quantize", "method": "fp16"}]},
        ],
        "evaluate": QUICK,
        "input_shapes": {"x": [2, 64]},
        "budget": {"max_wall_s": 0.5},
        "seed": 2103,
    }
    search = start(client, body)
    time.sleep(0.6)
    done = wait_search(client, search["id"], timeout=30)
    states = {c["label"]: c["state"] for c in done["candidates"]}
    assert states["cached"] == "succeeded", f"the finished candidate is kept: {states}"
    assert done["candidates"][0]["reused_from"] == job["id"], "a repeated candidate costs nothing"
    assert [s for label, s in states.items() if label != "cached"] == ["cut", "cut"], states
    assert done["progress"]["cut"] == 2 and done["chosen_job_id"] == done["candidates"][0]["job_id"], done
    for c in done["candidates"][1:]:
        assert "max_wall_s" in c["note"], c
        final = stack.wait_for(client, c["job_id"])
        assert final["status"] == "cancelled", final


def test_a_candidate_that_misses_the_floor_after_its_last_step_is_stopped_early(
    client: httpx.Client, stack: Stack, models: dict[str, str]
) -> None:
    body = {
        "model_id": models["heavy"],
        "space": [{"label": "per-tensor", "passes": [{"type": "quantize", "method": "dynamic", "per_channel": False}]}],
        "evaluate": SLOW,
        "constraints": {"min_cosine": 0.999999},
        "cache": False,
    }
    done = wait_search(client, start(client, body)["id"], timeout=180)
    candidate = done["candidates"][0]
    assert candidate["state"] == "pruned" and "min_cosine" in candidate["note"], candidate
    assert done["progress"]["pruned"] == 1 and done["chosen_job_id"] is None, done
    job = stack.wait_for(client, candidate["job_id"])
    assert job["status"] == "cancelled" and job["current_pass"] is None, "stopped before its slow evaluation ended"


def test_cancelling_a_search_cancels_its_candidates(client: httpx.Client, stack: Stack, models: dict[str, str]) -> None:
    dynamic = {"type": "quantize", "method": "dynamic"}
    body = {
        "model_id": models["heavy"],
        "space": [{"passes": [dynamic]}, {"passes": [{**dynamic, "per_channel": False}]}],
        "evaluate": SLOW,
        "cache": False,
    }
    search = start(client, body)
    wait_until(lambda: client.get(f"/v1/searches/{search['id']}").json()["progress"]["running"] >= 1)
    cancelled = client.post(f"/v1/searches/{search['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    for c in cancelled.json()["candidates"]:
        assert stack.wait_for(client, c["job_id"])["status"] == "cancelled", f"{c['label']} was not cancelled"
    again = client.post(f"/v1/searches/{search['id']}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_two_workers_run_candidates_of_one_search_at_once(
    client: httpx.Client, stack: Stack, models: dict[str, str]
) -> None:
    second = start_worker(stack.env, stack.home / "logs" / "worker-2.log", "w2")
    dynamic = {"type": "quantize", "method": "dynamic"}
    body = {
        "model_id": models["heavy"],
        "space": [{"passes": [dynamic]}, {"passes": [{**dynamic, "per_channel": False}]}],
        "evaluate": SLOW,
        "cache": False,
    }
    try:
        search = start(client, body)
        ids = [c["job_id"] for c in search["candidates"]]
        seen: set[str] = set()

        def both_running() -> bool:
            with session_scope(stack.database_url) as session:
                rows = session.execute(select(Job.status, Job.worker).where(Job.id.in_(ids))).all()
            if all(r.status == "running" for r in rows):
                seen.update(str(r.worker) for r in rows)
                return True
            return False

        wait_until(both_running, timeout=180)
        assert len(seen) == 2, f"the two candidates ran on one worker: {seen}"
        assert client.post(f"/v1/searches/{search['id']}/cancel").status_code == 200
        for job_id in ids:
            stack.wait_for(client, job_id)
    finally:
        second.terminate()
        second.wait(timeout=60)


def test_bad_searches_are_refused_naming_the_field(client: httpx.Client, models: dict[str, str]) -> None:
    not_object = client.post("/v1/searches", content=b"[]", headers={"content-type": "application/json"})
    detail = not_object.json()["detail"]
    assert not_object.status_code == 422 and "model_id" in detail and "passes" not in detail, detail
    unknown = client.post("/v1/searches", json={"model_id": models["mlp"], "budget": {"max_candidates": 0}})
    problem = unknown.json()
    assert unknown.status_code == 422 and problem["code"] == "validation_error", problem
    assert [e["field"] for e in problem["errors"]] == ["budget.max_candidates"], problem
    bad_pass = client.post(
        "/v1/searches", json={"model_id": models["mlp"], "space": [{"passes": [{"type": "shrink"}]}]}
    ).json()
    assert bad_pass["code"] == "validation_error" and bad_pass["errors"][0]["field"] == "space.0.passes.0.type"
    missing = client.post("/v1/searches", json={"model_id": "mdl_00000000000000000000"}).json()
    assert missing["code"] == "validation_error" and missing["errors"][0]["field"] == "model_id", missing
