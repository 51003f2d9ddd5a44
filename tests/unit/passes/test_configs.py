"""The pass configs as a client meets them: each method's own settings only, a stored spec validates
exactly as it did at submit, and refusals say what to send instead."""

import pytest
from pydantic import ValidationError

from app.schemas.jobs import JobSpec

STATIC = {"type": "quantize", "method": "static", "calibration": {"dataset_id": "ds_1"}}
EVERY_METHOD = [
    STATIC,
    {"type": "quantize", "method": "int4", "block_size": 64},
    {"type": "quantize", "method": "int4", "algorithm": "hqq", "block_size": 128},
    {"type": "quantize", "method": "int8_blocks", "block_size": 64},
    {"type": "prune", "method": "depth", "ratio": 0.25, "dataset_id": "ds_t"},
    {"type": "quantize", "method": "fp16"},
    {"type": "quantize", "method": "dynamic"},
    {"type": "quantize", "method": "bf16"},
    {"type": "prune", "method": "structured", "ratio": 0.3, "finetune": {"dataset_id": "ds_a"}},
    {"type": "prune", "method": "magnitude", "sparsity": 0.7, "scope": "layer"},
    {"type": "prune", "method": "threshold", "threshold": 0.01},
    {"type": "lowrank", "method": "tucker", "rank_ratio": 0.5},
    {"type": "lowrank", "method": "svd", "energy": 0.9},
    {"type": "distill", "student": "drop_layers", "dataset_id": "ds_a"},
    {"type": "convert", "to": "pt2"},
    {"type": "optimize"},
]


@pytest.mark.parametrize("config", EVERY_METHOD)
def test_a_stored_spec_validates_again_as_it_did_at_submit(config: dict) -> None:
    spec = JobSpec.model_validate({"model_id": "mdl_1", "passes": [config]})
    stored = spec.model_dump(mode="json")
    assert JobSpec.model_validate(stored) == spec, "the worker reads back what the API stored"


@pytest.mark.parametrize(
    ("config", "where", "fragment"),
    [
        ({"type": "quantize", "method": "static"}, "quantize.static", "needs calibration data"),
        ({"type": "quantize", "method": "int4", "per_channel": False}, "int4.per_channel", "Extra inputs"),
        ({"type": "quantize", "method": "dynamic", "block_size": 64}, "dynamic.block_size", "Extra inputs"),
        ({**STATIC, "symmetric": True}, "static.symmetric", "Extra inputs"),
        ({"type": "quantize", "method": "int4", "block_size": 48}, "int4.block_size", "not a power of two"),
        ({**STATIC, "calibration": {"dataset_id": "ds_1", "method": "median"}}, "calibration.method", "minmax"),
        ({"type": "quantize", "method": "bf16", "representation": "onnx"}, "bf16.representation", "torch"),
        ({"type": "prune", "method": "magnitude", "threshold": 0.1, "sparsity": 0.5}, "threshold", "Extra"),
        ({"type": "prune", "method": "structured", "ratio": 0.3, "importance": "taylor"}, "structured", "finetune"),
        ({"type": "lowrank", "method": "tucker", "energy": 0.9, "rank_ratio": 0.5}, "tucker.energy", "Extra"),
        ({"type": "lowrank", "method": "svd"}, "svd", "exactly one of rank_ratio or energy"),
        ({"type": "squash"}, "passes.0", "must name a pass: one of 'convert'"),
        ({"type": "quantize", "method": "int4", "algorithm": "gptq"}, "quantize.int4.algorithm", "'rtn' or 'hqq'"),
        ({"type": "prune", "method": "depth", "ratio": 0.25}, "depth.dataset_id", "Field required"),
    ],
)
def test_bad_parameters_are_refused_at_their_field(config: dict, where: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"model_id": "mdl_1", "passes": [config]})
    error = info.value.errors()[0]
    field = ".".join(str(p) for p in error["loc"])
    assert where in field, f"the error points at {field}, not at {where}"
    assert fragment in str(info.value), str(info.value)


def test_the_openapi_shows_each_methods_own_settings() -> None:
    schema = JobSpec.model_json_schema()
    defs = schema["$defs"]
    assert "calibration" in defs["Static"]["properties"] and "calibration" not in defs["Dynamic"]["properties"]
    assert "block_size" in defs["Int4"]["properties"] and "block_size" not in defs["Static"]["properties"]
    assert set(defs["Tucker"]["properties"]) >= {"rank_ratio"} and "energy" not in defs["Tucker"]["properties"]
