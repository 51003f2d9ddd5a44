"""The verdict: each constraint met or not, `pass` only when all are, and a reason naming what failed."""

from typing import Any

from app.schemas.jobs import JobSpec
from workers.evaluation.report import constraints_verdict

RESULT: dict[str, Any] = {
    "fidelity": {"cosine_mean": 0.999},
    "size_ratio": 3.9,
    "latency": [{"batch_size": 1, "p50_ms": 2.0}, {"batch_size": 32, "p50_ms": 9.0}],
}
ACCURACY = {"task": "classification", "drop": 0.004}


def verdict(constraints: dict[str, Any] | None, accuracy: dict[str, Any] | None = ACCURACY) -> dict[str, Any]:
    spec = JobSpec.model_validate({"model_id": "mdl_x", "passes": [{"type": "optimize"}], "constraints": constraints})
    return constraints_verdict(spec, RESULT, accuracy)


def test_all_met_passes() -> None:
    result = verdict({"max_accuracy_drop": 0.01, "max_latency_ms": 2.5, "min_size_ratio": 3.5, "min_cosine": 0.99})
    assert result["verdict"] == "pass" and set(result["checks"]) == {
        "max_accuracy_drop",
        "max_latency_ms",
        "min_size_ratio",
        "min_cosine",
    }
    assert result["checks"]["max_latency_ms"]["value"] == 2.0, "p50 at the first batch size"


def test_one_missed_fails_and_says_which() -> None:
    result = verdict({"max_latency_ms": 1.5, "min_size_ratio": 3.5})
    assert result["verdict"] == "fail"
    assert result["checks"]["max_latency_ms"]["met"] is False and result["checks"]["min_size_ratio"]["met"] is True
    assert "max_latency_ms" in result["reason"] and "min_size_ratio" not in result["reason"]


def test_accuracy_limit_without_labels_fails_as_unchecked() -> None:
    result = verdict({"max_accuracy_drop": 0.01}, accuracy=None)
    assert result["verdict"] == "fail" and result["checks"]["max_accuracy_drop"]["met"] is None
    assert "labels" in result["reason"], "the reason says what to give"


def test_no_constraints_pass() -> None:
    assert verdict(None)["verdict"] == "pass"
