"""The latency protocol through the real service: three jobs that change nothing (a graph optimisation of an
already optimal MLP) each read "no measurable difference", with an interval that spans 1 and a verdict that
is a plain pass."""

from pathlib import Path

from tests.conftest import Stack, upload


def test_three_no_op_jobs_read_no_measurable_difference(stack: Stack, mlp_onnx: Path) -> None:
    with stack.client() as client:
        model = upload(client, mlp_onnx)
        spec = {
            "model_id": model["id"],
            "passes": [{"type": "optimize"}],
            "input_shapes": {"x": [64, 64]},
            "evaluate": {"latency": {"batch_sizes": [64], "runs": 60, "warmup": 5}},
            "cache": False,  # three real measurements, never a reused one
        }
        submitted = [client.post("/v1/jobs", json={**spec, "seed": seed}) for seed in range(3)]
        done = [stack.wait_for(client, r.json()["id"]) for r in submitted]
        assert [j["status"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
        reports = [client.get(f"/v1/jobs/{j['id']}/report").json() for j in done]
    readings = [
        (c["speedup"], c["speedup_ci95"]["low"], c["speedup_ci95"]["high"], c["reading"])
        for r in reports
        for c in r["result"]["latency_comparison"]
    ]
    print("\nno-op jobs: " + "; ".join(f"x{r:.3f} [{lo:.3f}, {hi:.3f}] {w}" for r, lo, hi, w in readings))
    assert len(readings) == 3, "one like-for-like comparison per job (ONNX against ONNX)"
    assert all(reading == "no measurable difference" for *_, reading in readings), readings
    assert all(r["constraints"]["verdict"] == "pass" for r in reports), [r["constraints"] for r in reports]
