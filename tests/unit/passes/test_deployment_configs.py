"""The deployment targets as a client meets them: `convert` to openvino or tflite with only the settings
that apply, `quantize nncf` with its calibration, the plan ending in the deployment format, and how a TFLite
model's channels-last layout is recognised."""

import pytest
from pydantic import TypeAdapter, ValidationError

from app.schemas.jobs import JobSpec
from passes.base import FidelityFloors, PassConfig
from passes.convert.deployment import layout, layout_name
from passes.planner import PlanError, plan
from passes.registry import AnyPassConfig

PASSES: TypeAdapter[list[PassConfig]] = TypeAdapter(list[AnyPassConfig])
NNCF = {"type": "quantize", "method": "nncf", "calibration": {"dataset_id": "ds_1", "samples": 300}}
TFLITE_INT8 = {"type": "convert", "to": "tflite", "precision": "int8", "calibration": {"dataset_id": "ds_1"}}
FLOORS = FidelityFloors(fp16=0.99, int8=0.98, int4=0.95, generic=0.9, retries=2)


@pytest.mark.parametrize(
    "config",
    [
        {"type": "convert", "to": "openvino"},
        {"type": "convert", "to": "openvino", "precision": "float16"},
        {"type": "convert", "to": "tflite"},
        {"type": "convert", "to": "tflite", "precision": "float16"},
        TFLITE_INT8,
        NNCF,
        {**NNCF, "preset": "mixed", "model_type": "transformer", "nodes_to_exclude": ["/fc/Gemm"]},
    ],
)
def test_a_stored_spec_validates_again_as_it_did_at_submit(config: dict) -> None:
    spec = JobSpec.model_validate({"model_id": "mdl_1", "passes": [config]})
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec, "the worker reads back what was stored"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"type": "convert", "to": "openvino", "opset": 17}, "opset applies to `to: onnx` only"),
        ({"type": "convert", "to": "onnx", "precision": "float16"}, "precision applies to `to: openvino` or"),
        ({"type": "convert", "to": "openvino", "precision": "int8"}, '"method": "nncf"'),
        ({"type": "convert", "to": "tflite", "precision": "int8"}, "needs a representative dataset"),
        ({**TFLITE_INT8, "precision": "float16"}, "calibration applies to `to: tflite` with `precision: int8`"),
        ({"type": "convert", "to": "tflite", "precision": "bfloat16"}, "'float32', 'float16' or 'int8'"),
        ({"type": "quantize", "method": "nncf"}, "calibration"),
        ({**NNCF, "calibration": {"dataset_id": "ds_1", "method": "entropy"}}, "Extra inputs"),
        ({**NNCF, "per_channel": False}, "Extra inputs"),
        ({**NNCF, "preset": "fast"}, "'performance' or 'mixed'"),
    ],
)
def test_bad_settings_are_refused_saying_what_to_send(config: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"model_id": "mdl_1", "passes": [config]})
    assert fragment in str(info.value), str(info.value)


def test_a_torch_upload_goes_to_onnx_then_to_the_deployment_format() -> None:
    made = plan(PASSES.validate_python([{"type": "convert", "to": "openvino"}]), "hf_folder")
    assert [s.label for s in made.steps] == ["convert (auto)", "convert openvino"]
    assert made.artifact_format == "openvino" and made.steps[-1].gives == "openvino"


def test_nncf_then_tflite_plans_on_onnx_without_conversions() -> None:
    made = plan(PASSES.validate_python([NNCF, TFLITE_INT8]), "onnx")
    assert [s.label for s in made.steps] == ["quantize nncf", "convert tflite int8"]
    assert made.artifact_format == "tflite"


def test_a_pass_after_a_deployment_format_is_refused_naming_the_convert() -> None:
    passes = [{"type": "convert", "to": "tflite"}, {"type": "quantize", "method": "dynamic"}]
    with pytest.raises(PlanError) as info:
        plan(PASSES.validate_python(passes), "onnx")
    assert info.value.index == 0 and "make the convert to tflite the last pass" in str(info.value)


def test_an_int8_tflite_is_held_to_the_int8_floor_not_to_the_conversion_check() -> None:
    int8, fp32 = PASSES.validate_python([TFLITE_INT8, {"type": "convert", "to": "tflite"}])
    assert not int8.checks_conversion() and int8.fidelity_floor(FLOORS) == FLOORS.int8
    assert fp32.checks_conversion() and fp32.fidelity_floor(FLOORS) is None
    (nncf,) = PASSES.validate_python([NNCF])
    assert nncf.fidelity_floor(FLOORS) == FLOORS.int8


@pytest.mark.parametrize(
    ("original", "converted", "expected"),
    [
        ((32, 1, 8, 8), [-1, 8, 8, 1], [0, 2, 3, 1]),
        ((32, 3, 224, 224), [1, 224, 224, 3], [0, 2, 3, 1]),
        ((4, 16, 100), [-1, 100, 16], [0, 2, 1]),
        ((4, 32), [-1, 32], None),
        ((2, 8, 8, 1), [-1, 2, 8, 8], None),
    ],
)
def test_the_channels_last_layout_is_recognised_from_the_shapes(
    original: tuple[int, ...], converted: list[int], expected: list[int] | None
) -> None:
    assert layout(original, converted) == expected


def test_layouts_are_named_for_the_report() -> None:
    assert layout_name(4, True) == "NHWC (channels last; the original takes NCHW)"
    assert layout_name(2, False) == "as the original"
