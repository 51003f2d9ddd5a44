"""/v1/jobs: submit (JSON spec, or one multipart request with the model file and the spec), read,
list, cancel. The report routes are in app/api/reports.py."""

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from app.api.deps import PublisherDep, SessionDep, SettingsDep, StoreDep, TenantDep
from app.db.models import Job
from app.errors import MalformedRequest, SqueezeError, ValidationFailed
from app.schemas.common import Page
from app.schemas.jobs import JobError, JobOut, JobSpec, JobStatus
from app.services import jobs as service
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


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobOut:
    return job_out(service.get_job(session, tenant, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobOut:
    return job_out(service.cancel_job(session, tenant, job_id))
