"""Liveness, readiness and metrics: /healthz answers while the process runs; /readyz checks database, broker,
store and says whether jobs run isolated; /metrics is the Prometheus exposition (requests, jobs by status,
queue age), behind METRICS_TOKEN when one is set."""

import asyncio
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.errors import Unauthorized
from app.services.isolation import isolation_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.to_thread(session.execute, text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise: readiness is a status, not an error
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(asyncio.to_thread(request.app.state.broker_ping), timeout=5)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    checks["store"] = "ok" if await asyncio.to_thread(store.healthy) else "error: not writable"
    isolation = isolation_state(settings.job_isolation)
    if isolation.unavailable:  # JOB_ISOLATION=bwrap on a host that cannot: every job would fail
        checks["isolation"] = f"error: {isolation.detail}"
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": checks,
        "job_isolation": {"mode": isolation.mode, "active": isolation.active, "detail": isolation.detail},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, settings: SettingsDep) -> Response:
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.metrics_token}".encode()):
            raise Unauthorized("GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`")
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
