"""The planner: the steps a spec becomes on a model format, conversions included, and the pipelines it
refuses at submit naming the pass."""

from typing import Any

import pytest
from pydantic import TypeAdapter

from passes.base import PassConfig
from passes.planner import Plan, PlanError, plan
from passes.registry import AnyPassConfig

PASSES: TypeAdapter[list[PassConfig]] = TypeAdapter(list[AnyPassConfig])


def steps(passes: list[dict], model_format: str) -> list[str]:
    return [step.label for step in plan(PASSES.validate_python(passes), model_format).steps]


def test_onnx_quantize_needs_no_conversion() -> None:
    assert steps([{"type": "quantize", "method": "dynamic"}], "onnx") == ["quantize dynamic"]


def test_a_torch_pass_on_onnx_goes_to_torch_and_back() -> None:
    planned = steps([{"type": "prune", "method": "structured", "ratio": 0.3}], "onnx")
    assert planned == ["convert (auto)", "prune structured", "convert (auto)"]


def test_mixed_pipeline_converts_at_each_change_of_form() -> None:
    passes: list[dict[str, Any]] = [
        {"type": "prune", "method": "magnitude", "sparsity": 0.5},
        {"type": "quantize", "method": "static", "calibration": {"dataset_id": "ds"}},
    ]
    assert steps(passes, "hf_folder") == ["prune magnitude", "convert (auto)", "quantize static"]


def test_the_last_explicit_convert_decides_the_artifact() -> None:
    passes = [{"type": "quantize", "method": "bf16"}, {"type": "convert", "to": "pt2"}]
    made = plan(PASSES.validate_python(passes), "onnx")
    assert [s.label for s in made.steps] == ["convert (auto)", "quantize bf16", "convert"]
    assert made.artifact_format == "pt2" and made.steps[-1].gives == "pt2"


def test_a_torch_upload_delivered_as_pt2_is_exported_again() -> None:
    made = plan(PASSES.validate_python([{"type": "convert", "to": "pt2"}]), "pt2")
    assert [s.label for s in made.steps] == ["convert"] and made.artifact_format == "pt2"


def test_half_precision_on_torch_without_a_torch_artifact_is_refused_naming_the_pass() -> None:
    passes = [{"type": "optimize"}, {"type": "quantize", "method": "fp16", "representation": "torch"}]
    with pytest.raises(PlanError) as info:
        plan(PASSES.validate_python(passes), "onnx")
    assert info.value.index == 1 and '"to": "pt2"' in str(info.value) and str(info.value).startswith("passes.1")


def test_a_stored_plan_reads_back_equal() -> None:
    made = plan(PASSES.validate_python([{"type": "prune", "method": "threshold", "threshold": 0.1}]), "onnx")
    again = Plan.model_validate(made.model_dump(mode="json"))
    assert again == made and [s.auto for s in again.steps] == [True, False, True]
