"""The verdict: each constraint met or not, `pass` only when all are, and a reason naming what failed."""

from typing import Any

from app.schemas.jobs import JobSpec
from app.schemas.tasks import ChildTask, ModelRecord
from passes.base import FidelityFloors
from passes.planner import plan
from workers.evaluation.report import constraints_verdict

RESULT: dict[str, Any] = {
    "fidelity": {"cosine_mean": 0.999},
    "size_ratio": 3.9,
    "latency": [{"batch_size": 1, "p50_ms": 2.0}, {"batch_size": 32, "p50_ms": 9.0}],
}
ACCURACY = {"task": "classification", "drop": 0.004}
FLOOR = 0.9


def verdict(constraints: dict[str, Any] | None, accuracy: dict[str, Any] | None = ACCURACY) -> dict[str, Any]:
    spec = JobSpec.model_validate({"model_id": "mdl_x", "passes": [{"type": "optimize"}], "constraints": constraints})
    return constraints_verdict(spec, RESULT, accuracy, FLOOR)


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


def test_no_constraints_pass_above_the_fidelity_floor() -> None:
    result = verdict(None)
    assert result["verdict"] == "pass" and result["checks"]["fidelity_floor"]["met"] is True


def _verdict_of(result: dict[str, Any], constraints: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = JobSpec.model_validate({"model_id": "mdl_x", "passes": [{"type": "optimize"}], "constraints": constraints})
    return constraints_verdict(spec, result, None, FLOOR)


def test_a_broken_model_fails_without_constraints() -> None:
    result = _verdict_of({**RESULT, "fidelity": {"cosine_mean": 0.48}})
    assert result["verdict"] == "fail", "cosine 0.48 to the original is not a pass, with or without constraints"
    assert "fidelity_floor" in result["reason"]


def test_min_cosine_replaces_the_floor() -> None:
    result = _verdict_of({**RESULT, "fidelity": {"cosine_mean": 0.85}}, {"min_cosine": 0.8})
    assert result["verdict"] == "pass" and "fidelity_floor" not in result["checks"]


def _comparison(speedup: float, low: float, high: float, reading: str) -> dict[str, Any]:
    return {
        "batch_size": 32,
        "headline": True,
        "speedup": speedup,
        "speedup_ci95": {"low": low, "high": high},
        "reading": reading,
        "baseline_runtime": "onnxruntime",
        "result_runtime": "onnxruntime",
    }


def test_a_significantly_slower_result_is_a_warning() -> None:
    slower = {**RESULT, "latency_comparison": [_comparison(0.09, 0.08, 0.1, "slower")]}
    result = _verdict_of(slower)
    assert result["verdict"] == "warn", "x0.09 the speed is not a clean pass"
    assert "slower than the original at batch 32" in result["warnings"][0]


def test_no_measurable_difference_is_no_warning() -> None:
    same = {**RESULT, "latency_comparison": [_comparison(0.97, 0.9, 1.04, "no measurable difference")]}
    assert _verdict_of(same)["verdict"] == "pass"


def test_a_larger_result_is_a_warning() -> None:
    result = _verdict_of({**RESULT, "size_ratio": 0.8})
    assert result["verdict"] == "warn" and "larger than the original" in result["warnings"][0]


def test_a_missed_constraint_fails_even_with_warnings() -> None:
    result = _verdict_of({**RESULT, "size_ratio": 0.8}, {"min_size_ratio": 2})
    assert result["verdict"] == "fail" and result["warnings"], "the warnings are kept beside the failure"


FLOORS = FidelityFloors(fp16=0.99, int8=0.98, int4=0.9, generic=0.5, retries=4)


def _job_floor(passes: list[dict[str, Any]], constraints: dict[str, Any] | None = None) -> float:
    spec = JobSpec.model_validate({"model_id": "mdl_x", "passes": passes, "constraints": constraints})
    model = ModelRecord(
        id="mdl_x", format="onnx", inputs=[], outputs=[], details={}, size_bytes=1, sha256="0", param_count=None
    )
    task = ChildTask(
        spec=spec,
        plan=plan(spec.passes, "onnx"),
        model=model,
        datasets={},
        threads=1,
        max_unpacked_bytes=1,
        floors=FLOORS,
    )
    return task.fidelity_floor()


def test_the_floor_is_the_methods_setting() -> None:
    assert _job_floor([{"type": "quantize", "method": "fp16"}]) == 0.99
    assert _job_floor([{"type": "quantize", "method": "dynamic"}]) == 0.98
    assert _job_floor([{"type": "quantize", "method": "int4"}]) == 0.9


def test_a_pipeline_takes_its_lowest_floor_and_a_graph_rewrite_sets_none() -> None:
    assert (
        _job_floor(
            [{"type": "prune", "method": "magnitude", "sparsity": 0.5}, {"type": "quantize", "method": "dynamic"}]
        )
        == 0.5
    )
    assert _job_floor([{"type": "optimize"}, {"type": "quantize", "method": "fp16"}]) == 0.99, "optimize sets none"
    assert _job_floor([{"type": "optimize"}]) == 0.5, "nothing but a rewrite: the generic floor"


def test_the_spec_overrides_the_floor() -> None:
    assert _job_floor([{"type": "quantize", "method": "fp16"}], {"min_cosine": 0.9}) == 0.9
