"""create_app(): routers, exception handlers (every error is problem+json) and the shared state."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api import artifacts, datasets, health, jobs, models
from app.errors import SqueezeError
from app.queue import RUN_JOB_TASK, make_celery
from app.services.uploads import remove_stale
from app.settings import Settings, get_settings
from app.storage import open_store

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"https://squeeze.dev/problems/{code}", "title": title, "status": status, "detail": detail,
            "code": code, **{k: v for k, v in extra.items() if v is not None}}
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SqueezeError)
    async def _domain(_: Request, exc: SqueezeError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.title, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem(422, "validation_error", "The request is not valid", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), f"{exc.detail}: see /docs for the routes")

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem(503, "database_unavailable", "The database is unavailable",
                       "the service cannot reach its database right now; retry after a few seconds")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "internal_error", "Internal error",
                       f"an unexpected {type(exc).__name__}; the service logged it")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        remove_stale(settings.tmp_dir)
        yield

    app = FastAPI(title="Squeeze", version=__version__, lifespan=lifespan,
                  description="Upload a model, queue compression passes, download the result and its report.")
    celery = make_celery(settings, "squeeze-api")

    def publish(job_id: str, queue: str) -> None:
        celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, retry=True,
                         retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})

    def broker_ping() -> None:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)

    app.state.settings = settings
    app.state.store = open_store(settings.effective_storage_url)
    app.state.publish = publish
    app.state.broker_ping = broker_ping
    _install_error_handlers(app)
    for router in (health.router, models.router, datasets.router, jobs.router, artifacts.router):
        app.include_router(router)
    return app
