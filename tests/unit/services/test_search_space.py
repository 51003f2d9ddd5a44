"""The proposed space fits the model and the data it is given, explains itself, and keeps to the budget."""

import pytest

from app.schemas.jobs import JobSpec
from app.schemas.searches import SearchSpec
from app.services.search_space import propose


def spec(**extra: object) -> SearchSpec:
    return SearchSpec.model_validate({"model_id": "mdl_x", "budget": {"max_candidates": 32}, **extra})


def labels(s: SearchSpec, details: dict) -> list[str]:
    return [c.label for c in propose(s, details)[0]]


def test_every_candidate_is_a_valid_job_with_a_reason() -> None:
    full = spec(calibration_dataset_id="ds_cal", train_dataset_id="ds_train")
    candidates, _ = propose(full, {"op_types": ["Conv", "Gemm", "MatMul"]})
    assert len({c.label for c in candidates}) == len(candidates), "labels must be unique"
    for c in candidates:
        assert c.reason, f"{c.label} has no reason"
        JobSpec.model_validate({"model_id": "mdl_x", "passes": c.passes})
    kinds = {p["type"] + ":" + p.get("method", "") for c in candidates for p in c.passes}
    assert {"quantize:dynamic", "quantize:static", "quantize:fp16", "quantize:int4"} <= kinds, kinds
    assert {"prune:structured", "lowrank:svd", "distill:"} <= kinds, kinds


def test_without_data_there_are_no_static_or_training_candidates_and_the_notes_say_so() -> None:
    candidates, notes = propose(spec(), {"op_types": ["MatMul"]})
    passes = [p for c in candidates for p in c.passes]
    assert all(p.get("method") != "static" for p in passes), "static int8 proposed without calibration data"
    assert all(p["type"] == "quantize" for p in passes), "training candidates proposed without a training dataset"
    assert any("calibration_dataset_id" in n for n in notes) and any("train_dataset_id" in n for n in notes), notes


def test_int4_only_where_the_graph_has_matmul_or_gather() -> None:
    assert not any("int4" in label for label in labels(spec(), {"op_types": ["Conv", "Gemm"]}))
    assert any("int4" in label for label in labels(spec(), {"op_types": ["Conv", "MatMul"]}))


@pytest.mark.parametrize("budget", [1, 3, 5])
def test_the_budget_caps_the_space_and_small_budgets_mix_families(budget: int) -> None:
    s = spec(calibration_dataset_id="ds_cal", train_dataset_id="ds_train", budget={"max_candidates": budget})
    candidates, notes = propose(s, {"op_types": ["Conv", "Gemm"]})
    assert len(candidates) == budget
    assert any("beyond the budget" in n for n in notes), notes
    if budget >= 2:
        assert any(p["type"] == "prune" for c in candidates for p in c.passes), "a small budget tried no pruning"


def test_a_cuda_search_proposes_the_gpu_methods_as_valid_cuda_jobs() -> None:
    gpu = spec(device="cuda", calibration_dataset_id="ds_cal", train_dataset_id="ds_train")
    candidates, _ = propose(gpu, {"op_types": ["MatMul"]})
    methods = {p.get("method") for c in candidates for p in c.passes}
    assert {"fp8", "int8_weight_only", "int4_weight_only", "semi_structured_2_4"} <= methods, methods
    for c in candidates:
        JobSpec.model_validate({"model_id": "mdl_x", "device": "cuda", "passes": c.passes})
    sparse = next(c for c in candidates if c.label == "2:4 fp8 + finetune")
    assert sparse.passes[0]["finetune"]["dataset_id"] == "ds_train" and sparse.passes[0]["dtype"] == "fp8"
    static = next(c for c in candidates if c.label == "fp8 static")
    assert static.passes[0]["calibration"]["dataset_id"] == "ds_cal"
    assert not {"fp8", "semi_structured_2_4"} & {p.get("method") for c in propose(spec(), {})[0] for p in c.passes}
