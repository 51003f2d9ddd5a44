"""Liveness, readiness and metrics: /healthz answers while the process runs; /readyz checks database, broker,
store; /metrics is the Prometheus exposition (requests, jobs by status, queue age)."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.deps import SessionDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, session: SessionDep, store: StoreDep) -> JSONResponse:
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
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
