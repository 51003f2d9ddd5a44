"""API keys through the real API and CLI: one 401 for every bad key, open health routes, revocation."""

import os
import subprocess
import sys

import httpx

from tests.conftest import ROOT, Stack


def _cli(stack: Stack, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **stack.env},
        timeout=120,
        check=True,
    )
    return result.stdout


def _get(stack: Stack, path: str, authorization: str | None) -> httpx.Response:
    with stack.client("auth-probe") as client:
        headers = {"Authorization": authorization} if authorization is not None else {}
        if authorization is None:
            client.headers.pop("Authorization")
        return client.get(path, headers=headers)


def test_missing_malformed_unknown_and_revoked_keys_get_the_same_401(stack: Stack) -> None:
    created = _cli(stack, "create", "--tenant", "revokee")
    token = next(line for line in created.splitlines() if line.startswith("sqz_"))
    prefix = token.split("_")[1]
    assert "whsec_" in created, "key creation shows the tenant's webhook secret"
    assert _get(stack, "/v1/models", f"Bearer {token}").status_code == 200
    listing = _cli(stack, "list")
    assert prefix in listing and token not in listing, "list shows prefixes, not secrets"
    _cli(stack, "revoke", prefix)
    unknown = "sqz_" + "0" * 12 + "_" + "A" * 43
    bodies = []
    for authorization in [
        None,
        "Bearer",
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        f"Bearer {unknown}",
        f"Bearer {token[:-1]}x",
        f"Bearer {token}",
    ]:
        response = _get(stack, "/v1/models", authorization)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer"), "401 names the scheme to use"
        bodies.append(response.json())
    assert all(b == bodies[0] for b in bodies), "every bad key must get the identical answer"
    assert bodies[0]["code"] == "unauthorized" and "squeeze keys create" in bodies[0]["detail"]


def test_health_docs_and_schema_stay_open(stack: Stack) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert _get(stack, path, None).status_code == 200, f"{path} must answer without a key"
    schema = _get(stack, "/openapi.json", None).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"], "the schema documents the bearer key"


def test_tenant_endpoint_shows_webhook_secret_and_limits(stack: Stack) -> None:
    with stack.client("whoami") as client:
        body = client.get("/v1/tenant").json()
    assert body["tenant"] == "whoami" and body["webhook_secret"].startswith("whsec_")
    assert body["max_active_jobs"] >= 1 and body["rate_limit_burst"] >= 1


def test_clients_cannot_set_tenant_or_owner_fields(client: httpx.Client) -> None:
    for field in ("tenant", "owner", "quota"):
        response = client.post(
            "/v1/jobs", json={"model_id": "mdl_x", "passes": [{"type": "optimize"}], field: "someone-else"}
        )
        assert response.status_code == 422 and field in response.text, f"{field} must be refused, not ignored"


def test_metrics_need_the_metrics_token_where_one_is_set(limited: Stack) -> None:
    """The limited API runs with METRICS_TOKEN=metrics-secret (tests/security/conftest.py)."""
    token = limited.env["METRICS_TOKEN"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
        response = httpx.get(f"{limited.url}/metrics", headers=headers, timeout=10)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized", headers
    response = httpx.get(f"{limited.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200 and "squeeze_http_requests_total" in response.text, response.text[:200]
