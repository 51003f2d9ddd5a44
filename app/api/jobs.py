"""/v1/jobs: submit (JSON spec, or one multipart request with the model file and the spec), read (at
once, or long-polled with `?wait=N`), follow as server-sent events, list, cancel. The report routes are in
app/api/reports.py."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdmissionDep, PublisherDep, SessionDep, SettingsDep, StoreDep, TenantDep, WatcherDep
from app.db.models import Job
from app.db.session import session_scope
from app.errors import MalformedRequest, NotFound, SqueezeError, ValidationFailed
from app.schemas.common import Page
from app.schemas.jobs import JobError, JobOut, JobSpec, JobStatus
from app.services import jobs as service
from app.services.job_events import JobWatcher, job_tag, matches
from app.services.models import create_model
from app.services.uploads import MAX_FIELD_BYTES, declared_length, read_small_body, receive_upload
from passes.planner import Plan

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(job: Job) -> JobOut:
    duration = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    error = JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None
    return JobOut(
        id=job.id,
        model_id=job.model_id,
        status=job.status,
        progress=job.progress,  # type: ignore[arg-type]
        current_pass=job.current_pass,
        attempts=job.attempts,
        queue=job.queue,
        spec=job.spec,
        plan=Plan.model_validate(job.plan) if job.plan else None,
        error=error,
        verdict=verdict_of(job.report),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=duration,
        reused_from=job.reused_from,
        search_id=job.search_id,
        candidate=job.candidate,
    )


def verdict_of(report: dict[str, Any] | None) -> Any:
    """The verdict stored with the report (validated against the report schema when it was made)."""
    return (report.get("constraints") or {}).get("verdict") if report else None


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "spec": {"type": "string", "description": "the job spec as JSON, without model_id"},
                        },
                    }
                },
            }
        }
    },
)
async def submit_job(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    publish: PublisherDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobOut:
    """Queue a job. 202 with Location; the same Idempotency-Key and spec returns the first job."""
    content_type = request.headers.get("content-type", "")
    length = declared_length(request.headers.get("content-length"))
    if content_type.startswith("multipart/form-data"):
        upload = await receive_upload(
            request.stream(), content_type, settings.tmp_dir, settings.max_upload_bytes, declared_length=length
        )
        try:
            raw = _parse_json(upload.fields.get("spec", ""), "spec form field")
        except SqueezeError:
            upload.discard()  # refused before it became a model: nothing of it stays
            raise
        model = await create_model(session, store, settings, tenant, upload)
        raw["model_id"] = model.id
    else:
        body = await read_small_body(request.stream(), length, MAX_FIELD_BYTES)
        raw = _parse_json(body.decode("utf-8", "replace"), "request body")
    # In a thread: the webhook check resolves a host name, which must not stall the event loop.
    job, created = await asyncio.to_thread(service.submit_job, session, settings, publish, tenant, raw, idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.status_code = 200
    return job_out(job)


def _parse_json(text: str, where: str, what: str = "job spec", needs: str = "model_id and passes") -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"the {where} is not valid JSON ({exc.msg} at position {exc.pos}); send the {what} as a JSON object"
        ) from exc
    except (RecursionError, ValueError) as exc:  # nesting past the parser's depth; an integer of 4,300+ digits
        raise MalformedRequest(
            f"the {where} nests too deeply or holds an integer too long to read; send a plain {what}"
        ) from exc
    if not isinstance(value, dict):
        raise ValidationFailed(f"the {where} must be a JSON object with {needs}")
    return value


@router.get("", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    status: JobStatus | None = None,
) -> Page[JobOut]:
    rows, next_cursor = service.list_jobs(session, tenant, limit, cursor, status)
    return Page[JobOut](items=[job_out(j) for j in rows], next_cursor=next_cursor)


MAX_WAIT_S = 60
KEEPALIVE_S = 15.0
"""How often an events stream with nothing new sends a comment, so proxies keep it open."""


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses={304: {"description": "unchanged since the If-None-Match ETag (after waiting, with ?wait)"}},
)
async def read_job(
    job_id: str,
    session: SessionDep,
    admit: AdmissionDep,
    watcher: WatcherDep,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_S, description="long-poll: answer when the job's status changes, or after this long"),
    ] = 0,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Any:
    """The job's status, with its ETag. With `wait`, answers once it differs from the If-None-Match ETag
    (or, without one, from what it is now), at the latest after `wait` seconds; 304 when the If-None-Match
    ETag still holds."""
    job = await admit.first(lambda session, tenant: service.read_status(session, tenant, job_id))
    tag = job_tag(job)
    waits = wait and job.status not in service.TERMINAL and matches(if_none_match or tag, tag)
    if waits and await watcher.changed(job_id, tag, wait):
        job = await run_in_threadpool(service.read_status, session, job.tenant, job_id)
        tag = job_tag(job)
    if matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    # Serialized here, once: FastAPI would validate the JobOut against response_model again first.
    return Response(job_out(job).model_dump_json(), media_type="application/json", headers={"ETag": tag})


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the job's status as it changes"}},
)
async def job_events(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    admit: AdmissionDep,
    watcher: WatcherDep,
    last_event_id: Annotated[str | None, Header(max_length=1024)] = None,
) -> StreamingResponse:
    """Server-sent events: `status` with the job (JobOut) now and at every change, `end` with the job once it
    has ended, then the stream closes. Each event's id is the job's ETag; a client that reconnects with
    Last-Event-ID gets only what changed since."""
    job = await admit.first(lambda session, tenant: service.read_status(session, tenant, job_id))
    events = _job_events(request, watcher, settings.effective_database_url, job, last_event_id)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _job_events(
    request: Request, watcher: JobWatcher, database_url: str, job: Job, last_event_id: str | None
) -> AsyncIterator[bytes]:
    tag = job_tag(job)
    if not matches(last_event_id, tag) or job.status in service.TERMINAL:
        yield _event(job, tag)
    while job.status not in service.TERMINAL:
        changed = await watcher.changed(job.id, tag, KEEPALIVE_S)
        if await request.is_disconnected():
            return
        if not changed:
            yield b": keep-alive\n\n"
            continue
        try:
            job = await run_in_threadpool(_read_status, database_url, job.tenant, job.id)
        except NotFound:  # deleted while followed: nothing more will happen to it
            return
        tag = job_tag(job)
        yield _event(job, tag)


def _read_status(database_url: str, tenant: str, job_id: str) -> Job:
    with session_scope(database_url) as session:
        return service.read_status(session, tenant, job_id)


def _event(job: Job, tag: str) -> bytes:
    name = "end" if job.status in service.TERMINAL else "status"
    return f"event: {name}\nid: {tag}\ndata: {job_out(job).model_dump_json()}\n\n".encode()


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobOut:
    return job_out(service.cancel_job(session, tenant, job_id))
