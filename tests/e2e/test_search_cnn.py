"""A search on the digits CNN with labels, end to end: the proposed space (int8 dynamic and static, structured
pruning with fine-tuning then int8; three candidates, to stay small) under `max_accuracy_drop: 0.01`. The
chosen candidate's artifact is downloaded and re-measured here on the test set; no finished candidate meeting
the constraint is faster by its own report; the front is non-dominated; the report page draws it. Then
`squeeze search` repeats the search from the command line: every candidate is answered by the result cache,
and the same candidate is chosen."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from app.services import pareto
from tests.conftest import ROOT, Stack, start_worker, upload
from tests.e2e.test_compression_cnn import upload_dataset
from workers.examples import Digits

pytestmark = pytest.mark.e2e
MAX_DROP = 0.01


def accuracy(model: bytes | str, digits: Digits) -> float:
    session = ort.InferenceSession(model)
    return float((session.run(None, {"x": digits.x_test})[0].argmax(1) == digits.y_test).mean())


@pytest.fixture(scope="module")
def body(stack: Stack, digits: Digits, digits_cnn_onnx: Path) -> dict[str, Any]:
    with stack.client() as client:
        train = upload_dataset(client, {"x": digits.x_train, "labels": digits.y_train}, "train.npz")
        test = upload_dataset(client, {"x": digits.x_test, "labels": digits.y_test}, "test.npz")
        return {
            "model_id": upload(client, digits_cnn_onnx)["id"],
            "calibration_dataset_id": train,
            "train_dataset_id": train,
            "evaluate": {"dataset_id": test, "latency": {"batch_sizes": [1], "runs": 10, "warmup": 2}},
            "constraints": {"max_accuracy_drop": MAX_DROP},
            "budget": {"max_candidates": 3},
        }


@pytest.fixture(scope="module")
def search(stack: Stack, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The search, fanned out over the stack's worker and a second one started for it."""
    second = start_worker(stack.env, stack.home / "logs" / "worker-search.log", "search2")
    try:
        yield run_search(stack, body)
    finally:
        second.terminate()
        second.wait(timeout=60)


def run_search(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    with stack.client() as client:
        response = client.post("/v1/searches", json=body)
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 300
        found = response.json()
        while found["status"] == "running":
            assert time.monotonic() < deadline, f"search still running: {found['progress']}"
            time.sleep(1)
            found = client.get(response.headers["location"]).json()
    print("\nsearch:", found["verdict"])
    for c in found["candidates"]:
        print(f"  {c['label']}: {c['state']} {c['point']} {c['note'] or ''}")
    return dict(found)


def reports(client: httpx.Client, search: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c["job_id"]: client.get(f"/v1/jobs/{c['job_id']}/report").json()
        for c in search["candidates"]
        if c["state"] == "succeeded"
    }


def test_the_space_mixes_quantization_and_pruning(search: dict[str, Any]) -> None:
    kinds = {p["type"] for c in search["spec"].get("space") or [] for p in c["passes"]}
    labels = [c["label"] for c in search["candidates"]]
    assert not kinds, "no space was given: the service proposed one"
    assert any("prune" in label for label in labels) and any("int8 static" in label for label in labels), labels


def test_the_chosen_candidate_meets_the_constraint_on_a_re_measurement(
    client: httpx.Client, search: dict[str, Any], digits: Digits, digits_cnn_onnx: Path
) -> None:
    assert search["status"] == "succeeded" and search["chosen_job_id"], search["verdict"]
    model = next(a for a in client.get(f"/v1/jobs/{search['chosen_job_id']}/artifacts").json() if a["kind"] == "model")
    artifact = client.get(model["download_url"]).content
    drop = accuracy(str(digits_cnn_onnx), digits) - accuracy(artifact, digits)
    assert drop <= MAX_DROP + 1e-9, f"the chosen candidate loses {drop:.4f} top-1 here, over {MAX_DROP}"


def test_no_feasible_finished_candidate_is_faster_than_the_chosen_one(
    client: httpx.Client, search: dict[str, Any]
) -> None:
    own = reports(client, search)
    p50 = {job: r["result"]["latency"][0]["p50_ms"] for job, r in own.items()}
    feasible = [job for job, r in own.items() if r["constraints"]["checks"]["max_accuracy_drop"]["met"]]
    chosen = search["chosen_job_id"]
    assert chosen in feasible, "the chosen candidate met the constraint by its own report"
    faster = [job for job in feasible if p50[job] < p50[chosen]]
    assert not faster, f"feasible candidates faster than the chosen one ({p50[chosen]} ms): {faster}"


def test_the_front_is_non_dominated_over_every_finished_candidate(client: httpx.Client, search: dict[str, Any]) -> None:
    labels = {c["job_id"]: c["label"] for c in search["candidates"]}
    points = [p for job, r in reports(client, search).items() if (p := pareto.point_of(job, labels[job], r))]
    front = {p["job_id"] for p in search["front"]}
    assert front, "a finished search has a front"
    for p in points:
        assert (p.job_id in front) == (not any(pareto.dominates(q, p) for q in points)), p


def test_the_report_page_draws_the_front_the_constraint_and_links_every_point(
    client: httpx.Client, search: dict[str, Any]
) -> None:
    page = client.get(f"/v1/searches/{search['id']}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<svg" in html and 'class="constraint"' in html, "the scatter with the constraint line"
    finished = [c for c in search["candidates"] if c["point"]]
    for c in finished:
        assert f'href="/v1/jobs/{c["job_id"]}/report.html"' in html, f"{c['label']} is not linked"
    assert html.count('class="point front"') == sum(c["on_front"] for c in finished), "front points highlighted"
    assert np.isclose(search["quality_floor"], search["original_quality"] - MAX_DROP)


def test_squeeze_search_replays_it_from_the_cache(stack: Stack, body: dict[str, Any], search: dict[str, Any]) -> None:
    args = [sys.executable, "-m", "app.cli", "search", body["model_id"], "--dataset", body["evaluate"]["dataset_id"]]
    args += ["--calibration-dataset", body["calibration_dataset_id"], "--train-dataset", body["train_dataset_id"]]
    args += ["--max-accuracy-drop", str(MAX_DROP), "--max-candidates", "3"]
    args += ["--spec", '{"evaluate": {"latency": {"batch_sizes": [1], "runs": 10, "warmup": 2}}}']
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", **stack.cli_env()}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"a chosen candidate exits 0: {done.stderr}"
    assert "Pareto front" in done.stderr and "(chosen)" in done.stderr and "(cached)" in done.stderr, done.stderr
    chosen = next(c["label"] for c in search["candidates"] if c["job_id"] == search["chosen_job_id"])
    assert f"chose {chosen!r}" in done.stderr, f"the replay chooses {chosen} again: {done.stderr}"
