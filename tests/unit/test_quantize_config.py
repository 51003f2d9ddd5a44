"""The quantize pass's config: what the API refuses at submit, and that a stored spec re-validates in the
worker (the stored spec repeats every default, so it is read with the STORED context)."""

import pytest
from pydantic import ValidationError

from app.schemas.jobs import JobSpec
from app.schemas.passes import STORED

STATIC = {"type": "quantize", "method": "static", "calibration": {"dataset_id": "ds_1"}}


@pytest.mark.parametrize(
    "config",
    [
        STATIC,
        {"type": "quantize", "method": "int4", "block_size": 64},
        {"type": "quantize", "method": "fp16"},
        {"type": "quantize", "method": "dynamic"},
    ],
)
def test_a_stored_spec_validates_again(config: dict) -> None:
    spec = JobSpec.model_validate({"model_id": "mdl_1", "passes": [config]})
    assert JobSpec.model_validate(spec.model_dump(mode="json"), context={STORED: True}) == spec


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"type": "quantize", "method": "static"}, '"calibration": {"dataset_id"'),
        ({"type": "quantize", "method": "int4", "per_channel": False}, "per_channel do not apply to method"),
        ({"type": "quantize", "method": "dynamic", "block_size": 64}, "block_size do not apply"),
        ({**STATIC, "symmetric": True}, "symmetric do not apply to method 'static'"),
        ({"type": "quantize", "method": "int4", "block_size": 48}, "not a power of two"),
        ({**STATIC, "calibration": {"dataset_id": "ds_1", "method": "median"}}, "minmax"),
    ],
)
def test_bad_quantize_parameters_are_refused(config: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match="quantize") as info:
        JobSpec.model_validate({"model_id": "mdl_1", "passes": [config]})
    assert fragment in str(info.value)
