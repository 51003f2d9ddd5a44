"""create_app(): routers, exception handlers (every error is problem+json) and the shared state."""

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api import artifacts, datasets, health, jobs, models, reports, searches, tenant
from app.api.docs import offline_app
from app.errors import SqueezeError
from app.queue import make_celery, publish_job
from app.schemas.common import Problem
from app.services.isolation import isolation_state
from app.services.job_events import JobWatcher
from app.services.metrics import Metrics
from app.services.ratelimit import open_rate_limiter
from app.services.uploads import remove_stale
from app.settings import Settings, get_settings
from app.storage import open_store

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
ADMISSION_THREADS = 8
"""Threads that check keys and rate buckets (each holds a database connection while it works)."""
# Errors every authenticated route can answer, declared so the OpenAPI document tells clients (and
# schemathesis) their shape.
_PROBLEM_CONTENT = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description, "content": _PROBLEM_CONTENT}
    for status, description in [
        (400, "bad request"),
        (401, "missing, malformed, unknown or revoked API key"),
        (404, "no such object for this tenant"),
        (409, "conflict"),
        (413, "upload past the size limit"),
        (416, "range not satisfiable"),
        (422, "invalid request"),
        (429, "rate limited, or too many active jobs"),
        (503, "database unavailable"),
    ]
}


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://squeeze.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **{k: v for k, v in extra.items() if v is not None},
    }
    headers = {"Retry-After": "5", **(headers or {})} if status == 503 else headers
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SqueezeError)
    async def _domain(_: Request, exc: SqueezeError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.title, exc.message, exc.headers or None, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem(422, "validation_error", "The request is not valid", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), f"{exc.detail}: see /docs for the routes")

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # e.g. a NUL character in an id, which PostgreSQL text cannot hold (SQLite can): the client's value
        # is at fault, not the service.
        log.info("database refused a value: %s", exc.orig)
        return problem(
            422,
            "invalid_value",
            "A value in the request cannot be used",
            "a path, query or body value has characters the database cannot hold (such as NUL); remove them",
        )

    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem(
            503,
            "database_unavailable",
            "The database is unavailable",
            "the service cannot reach its database right now; retry after a few seconds",
        )

    # Refused or dropped connections, a server restarting, SQLite's lock wait running out, a full pool:
    # all transient, all a 503 with Retry-After rather than a 500.
    for database_down in (OperationalError, InterfaceError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(database_down, _database_down)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(
            500, "internal_error", "Internal error", f"an unexpected {type(exc).__name__}; the service logged it"
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(instance: FastAPI) -> AsyncIterator[None]:
        remove_stale(settings.tmp_dir)
        await asyncio.to_thread(isolation_state, settings.job_isolation)  # probed and logged once, at start
        yield
        instance.state.admission_pool.shutdown(wait=False)

    app = offline_app(
        title="Squeeze",
        version=__version__,
        lifespan=lifespan,
        description="Upload a model, queue compression passes, download the result and its report.",
    )
    celery = make_celery(settings, "squeeze-api")

    def publish(job_id: str, queue: str) -> None:
        # Few retries: if the broker is down the job stays queued in the database and the workers' sweep
        # publishes it, so the client gets its 202 without waiting for the broker.
        publish_job(celery, job_id, queue, settings.publish_retries)

    def broker_ping() -> None:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)

    app.state.settings = settings
    app.state.store = open_store(settings)
    app.state.publish = publish
    app.state.broker_ping = broker_ping
    app.state.rate_limiter = open_rate_limiter(
        settings.effective_broker_url,
        settings.effective_database_url,
        settings.rate_limit_per_s,
        settings.rate_limit_burst,
    )
    app.state.admission_pool = ThreadPoolExecutor(ADMISSION_THREADS, thread_name_prefix="squeeze-admission")
    app.state.job_watcher = JobWatcher(settings.effective_database_url, settings.status_poll_s)
    app.state.metrics = Metrics(settings.effective_database_url)
    app.add_middleware(app.state.metrics.middleware)  # type: ignore[arg-type]
    _install_error_handlers(app)
    app.include_router(health.router)
    routers = (models, datasets, jobs, reports, artifacts, searches, tenant)
    for router in (module.router for module in routers):
        app.include_router(router, responses=PROBLEM_RESPONSES)
    return app
