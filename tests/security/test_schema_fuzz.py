"""schemathesis against our own OpenAPI document, on the running API: whatever it sends (within the
schema and beyond it), no 5xx, and every response matches its documented status, type and schema.
Bounded: at most 20 examples per operation (10 valid, 10 invalid). Operations are driven through
hypothesis directly: schemathesis' lazy pytest fixture loader does not work with this pytest."""

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Stack

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_api_never_errors_and_matches_its_schema(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    headers = {"Authorization": f"Bearer {stack.key('fuzzer')}"}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10, "the schema lists every route"
    calls: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                response = case.call_and_validate(headers=headers, timeout=60, checks=CHECKS)
                calls.append(response.status_code)

            try:
                check()
            except Unsatisfiable:  # an operation with no parameters has nothing to make invalid
                assert mode == GenerationMode.NEGATIVE and not operation.path_parameters, operation.label
    assert len(calls) >= 5 * len(operations), f"only {len(calls)} requests were made"
