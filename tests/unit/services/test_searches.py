"""The early-stop rule on a candidate's figures after a step: stop only when the constraint is already missed
and no training step is left to recover it."""

from typing import Any

from app.db.models import Job
from app.schemas.searches import SearchSpec
from app.services.searches import hopeless

PLAN = {
    "steps": [
        {"index": 0, "config": {"type": "prune", "finetune": {"dataset_id": "ds_t"}}},
        {"index": 1, "config": {"type": "distill"}},
        {"index": 2, "config": {"type": "quantize"}},
    ]
}


def job(step: int, accuracy: float, cosine: float = 0.99) -> Job:
    interim: dict[str, Any] = {"step": step, "label": f"step {step}", "cosine_mean": cosine}
    return Job(plan=PLAN, interim={**interim, "accuracy": accuracy, "original_accuracy": 0.98})


def spec(**constraints: float) -> SearchSpec:
    return SearchSpec.model_validate({"model_id": "mdl_x", "constraints": constraints})


def test_a_missed_accuracy_with_a_training_step_ahead_is_kept() -> None:
    assert hopeless(spec(max_accuracy_drop=0.01), job(0, 0.90)) is None, "distillation may still recover it"


def test_a_missed_accuracy_after_the_last_training_step_is_pruned() -> None:
    reason = hopeless(spec(max_accuracy_drop=0.01), job(1, 0.90))
    assert reason is not None and reason.startswith("pruned:") and "max_accuracy_drop" in reason, reason


def test_a_met_constraint_or_no_constraint_is_kept() -> None:
    assert hopeless(spec(max_accuracy_drop=0.01), job(2, 0.975)) is None
    assert hopeless(SearchSpec.model_validate({"model_id": "mdl_x"}), job(2, 0.5)) is None


def test_a_cosine_under_min_cosine_is_pruned() -> None:
    reason = hopeless(spec(min_cosine=0.999), job(2, 0.98, cosine=0.99))
    assert reason is not None and "min_cosine" in reason, reason
