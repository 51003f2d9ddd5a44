"""The OpenAPI document validates and every `$ref` in it resolves: /docs shows the job spec pass by pass
instead of "Could not resolve reference" and `"passes": ["string"]`."""

from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home: Path = tmp_path_factory.mktemp("home")
    return create_app(Settings(squeeze_home=home)).openapi()


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(references(v) for v in node))
    return set()


def test_the_document_validates(document: dict[str, Any]) -> None:
    validate(document)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    refs = references(document)
    assert refs, "the document uses references"
    missing = sorted(r for r in refs if not r.startswith("#/components/schemas/") or r.rsplit("/", 1)[1] not in schemas)
    assert missing == [], f"/docs would show 'Could not resolve reference' for {missing}"
    assert "$defs" not in str(document["paths"]), "definitions live in components, not inside a path"


def test_the_job_spec_names_every_pass_config(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    passes = body["properties"]["passes"]["items"]
    named = {ref.rsplit("/", 1)[1] for ref in references(passes)}
    assert {"Convert", "Optimize", "Distill"} <= named, f"every pass is offered: {named}"
    schemas = document["components"]["schemas"]
    quantize = str(passes)
    for method in ("Dynamic", "Static", "Int4", "Fp16", "Bf16"):
        assert f"#/components/schemas/{method}" in quantize, f"quantize {method} is its own schema"
    assert "calibration" in schemas["Static"]["properties"] and "calibration" not in schemas["Dynamic"]["properties"]
