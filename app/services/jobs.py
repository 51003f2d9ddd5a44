"""Jobs: validate a spec against its model, record the job, publish its id; read, list and cancel.

The database row is the truth. Publishing only carries the id; if the broker is unreachable the job
stays queued in the database, the submit still succeeds, and the workers' sweep publishes it later (so
does an API that died between its commit and its publish: the sweep re-sends jobs queued for long).
"""

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.models import Artifact, Job, Model, Tenant, new_id, utcnow
from app.db.transitions import mark_unpublished
from app.errors import (
    Conflict,
    ImpossiblePipeline,
    NeedsGpu,
    NotFound,
    TooManyJobs,
    UnresolvedInputShape,
    ValidationFailed,
)
from app.schemas.datasets import shapes_from_dataset
from app.schemas.jobs import JobSpec
from app.schemas.shapes import ShapeError, resolve_input_shapes
from app.services import result_cache
from app.services.datasets import resolve_references
from app.services.models import get_model
from app.services.webhooks import check_url
from app.settings import Settings
from passes.planner import Plan, PlanError, plan

Spec = TypeVar("Spec", bound=BaseModel)

log = logging.getLogger(__name__)

Publisher = Callable[[str, str], None]
"""publish(job_id, queue): hand a job id to the broker."""

TERMINAL = ("succeeded", "failed", "cancelled")


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as [{field, message}], the field as a dotted path a client can find in its JSON (a
    choice a union could not make points at the field that chooses: `type`, or a pass's `method`)."""
    found = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
        elif err["type"] == "unknown_pass":
            loc.append("type")
        found.append({"field": prefix + ".".join(loc), "message": err["msg"]})
    return found


def validated(schema: type[Spec], raw: Any, what: str) -> Spec:
    """`raw` as `schema`, or a 422 naming each field that is wrong (the first five in its message)."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = validation_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ValidationFailed(f"the {what} is not valid: {summary}", errors=errors) from exc


def parse_spec(raw: Any) -> JobSpec:
    return validated(JobSpec, raw, "job spec")


def submit_job(
    session: Session, settings: Settings, publish: Publisher, tenant: str, raw_spec: Any, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Validate and record a job, then publish it (unless the result cache answered it). Returns (job,
    created); a retried key returns the first job."""
    spec = parse_spec(raw_spec)
    canonical = spec.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == idempotency_key))
        if existing is not None:
            return _replay(existing, request_hash, idempotency_key), False
    if spec.webhook is not None:
        check_url(str(spec.webhook.url))
    job = build_job(session, settings, tenant, spec)
    if job.status == "queued":
        reserve_active_slot(session, settings, tenant)
    job.idempotency_key = idempotency_key
    job.request_hash = request_hash
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the insert
        session.rollback()
        existing = session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        return _replay(existing, request_hash, str(idempotency_key)), False
    publish_queued(session, publish, [job])
    return job, True


def build_job(
    session: Session,
    settings: Settings,
    tenant: str,
    spec: JobSpec,
    search_id: str | None = None,
    candidate: str | None = None,
    field_prefix: str = "",
) -> Job:
    """Check a parsed spec against its model and datasets and make its row, not yet added: queued, or already
    succeeded with an earlier job's result when the result cache holds one. `field_prefix` places the
    fields of a 422 inside a larger request (a search's candidate)."""
    canonical = spec.model_dump(mode="json")
    try:
        model = get_model(session, tenant, spec.model_id)
    except NotFound as exc:
        raise ValidationFailed(
            f"model_id: {exc.message}", errors=[{"field": "model_id", "message": exc.message}]
        ) from exc
    datasets = resolve_references(session, tenant, canonical, model)
    check_evaluation(spec, model, datasets)
    check_device(spec, field_prefix)
    steps = plan_job(spec, model.format, field_prefix)
    key = result_cache.cache_key(canonical, model.sha256, datasets)
    job = Job(
        id=new_id("job"),
        tenant=tenant,
        model_id=model.id,
        spec=canonical,
        plan=steps.model_dump(mode="json"),
        queue=settings.queue_name(spec.device),
        status="queued",
        progress=0.0,
        attempts=0,
        cancel_requested=False,
        published_at=utcnow(),
        search_id=search_id,
        candidate=candidate,
        cache_key=key,
    )
    source = result_cache.find_source(session, tenant, key) if result_cache.cacheable(spec) else None
    if source is not None:
        result_cache.reuse(job, source)
    return job


def check_evaluation(spec: JobSpec, model: Model, datasets: dict[str, dict[str, Any]]) -> None:
    """The evaluation the spec asks for fits the model: its output exists, accuracy has labels, every
    input's shape can be fixed."""
    outputs = [str(o["name"]) for o in model.outputs]
    if spec.evaluate.output is not None and spec.evaluate.output not in outputs:
        message = f"the model has no output {spec.evaluate.output!r}; its outputs are {outputs}"
        raise ValidationFailed(f"evaluate.output: {message}", errors=[{"field": "evaluate.output", "message": message}])
    evaluation = datasets.get(spec.evaluate.dataset_id) if spec.evaluate.dataset_id else None
    labelled = evaluation is not None and evaluation["has_labels"]
    if spec.constraints and spec.constraints.max_accuracy_drop is not None and not labelled:
        message = "max_accuracy_drop needs accuracy: set evaluate.dataset_id to a dataset with 'labels'"
        raise ValidationFailed(message, errors=[{"field": "constraints.max_accuracy_drop", "message": message}])
    try:
        resolve_input_shapes(model.inputs, shapes_from_dataset(model.inputs, spec.input_shapes, evaluation))
    except ShapeError as exc:
        raise UnresolvedInputShape(str(exc), errors=[{"field": exc.field, "message": str(exc)}]) from exc


def publish_queued(session: Session, publish: Publisher, jobs: list[Job]) -> None:
    """Hand the committed queued jobs to the broker; a failed publish leaves the job for the workers' sweep."""
    for job in jobs:
        if job.status != "queued":
            continue
        try:
            publish(job.id, job.queue)
        except Exception as exc:  # the broker is down: the job is safe in the database and is published later
            log.warning("could not publish job %s (%s); it stays queued for the workers' sweep", job.id, exc)
            try:
                mark_unpublished(session, job.id)
            except SQLAlchemyError:  # still published later: the sweep also re-sends jobs queued for long
                log.warning("could not mark job %s unpublished", job.id)


def check_device(spec: JobSpec, field_prefix: str = "") -> None:
    """422 needs_gpu when a pass that runs only on a GPU is in a job for a CPU worker (`device: cpu`)."""
    if spec.device == "cuda":
        return
    for index, config in enumerate(spec.passes):
        if config.needs_gpu:
            message = (
                f"passes.{index} ({config.label()}) runs only on an NVIDIA GPU: {config.needs_gpu}. Set "
                '"device": "cuda" so a GPU worker (`squeeze worker --queues gpu`) runs the job, or choose a CPU '
                "method (quantize dynamic, static or int4 on ONNX; prune magnitude or structured)"
            )
            raise NeedsGpu(message, errors=[{"field": f"{field_prefix}passes.{index}", "message": message}])


def plan_job(spec: JobSpec, model_format: str, field_prefix: str = "") -> Plan:
    """The job's steps, or 422 impossible_pipeline naming the pass that cannot run where it is."""
    try:
        return plan(spec.passes, model_format)
    except PlanError as exc:
        field = f"{field_prefix}passes.{exc.index}"
        raise ImpossiblePipeline(str(exc), errors=[{"field": field, "message": exc.message}]) from exc


def reserve_active_slot(session: Session, settings: Settings, tenant: str, count: int = 1) -> None:
    """Refuse (429) a tenant whose `count` new jobs would pass its active-job cap. The tenant row is locked
    first and stays locked until the caller commits the new jobs, so concurrent submits on any number of API
    processes are counted one after the other: a no-op UPDATE takes PostgreSQL's row lock and SQLite's write
    lock alike."""
    session.execute(update(Tenant).where(Tenant.name == tenant).values(name=Tenant.name))
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant == tenant, Job.status.in_(("queued", "running")))
    )
    if active is not None and active + count > settings.max_active_jobs_per_tenant:
        session.rollback()  # let the next submit have the lock now
        asked = "" if count == 1 else f" and this request adds {count}"
        raise TooManyJobs(
            f"this tenant already has {active} queued or running jobs{asked} (the limit is "
            f"{settings.max_active_jobs_per_tenant}); wait for one to end, cancel one, or ask for fewer candidates",
            headers={"Retry-After": "10"},
        )


def _replay(existing: Job, request_hash: str, key: str) -> Job:
    if existing.request_hash != request_hash:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for job {existing.id} with a different "
            "spec; use a new key for a new job"
        )
    return existing


def get_job(session: Session, tenant: str, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant == tenant))
    if job is None:
        raise NotFound(f"no job {job_id!r}: list yours with GET /v1/jobs")
    return job


_STATUS_READ = (
    select(Job)
    .where(Job.id == bindparam("job_id"), Job.tenant == bindparam("tenant"))
    .execution_options(populate_existing=True)  # a second read in one session (after a wait) sees the new row
)
"""Built once: on the hottest route, building the expression would cost as much as running it."""


def read_status(session: Session, tenant: str, job_id: str) -> Job:
    """The job as a status read shows it (its verdict comes from the report), with the transaction ended: a
    request that then waits holds no connection, and its next read sees new commits."""
    job = session.scalar(_STATUS_READ, {"job_id": job_id, "tenant": tenant})
    session.commit()
    if job is None:
        raise NotFound(f"no job {job_id!r}: list yours with GET /v1/jobs")
    return job


def list_jobs(
    session: Session, tenant: str, limit: int, cursor: str | None, status: str | None
) -> tuple[list[Job], str | None]:
    query = select(Job).where(Job.tenant == tenant).order_by(Job.created_at.desc(), Job.id.desc())
    if status:
        query = query.where(Job.status == status)
    if cursor:
        anchor = get_job(session, tenant, cursor)
        query = query.where(
            (Job.created_at < anchor.created_at) | ((Job.created_at == anchor.created_at) & (Job.id < anchor.id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def cancel_job(session: Session, tenant: str, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one is flagged and its worker kills the pipeline."""
    job = get_job(session, tenant, job_id)
    if job.status in TERMINAL:
        raise Conflict(f"job {job_id!r} already ended as {job.status!r}; there is nothing to cancel")
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", finished_at=utcnow(), current_pass=None)
    )
    session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True))
    session.commit()
    session.refresh(job)
    return job


def list_artifacts(session: Session, tenant: str, job_id: str) -> list[Artifact]:
    """The job's artifacts; a job answered by the result cache lists those of the job it reused."""
    job = get_job(session, tenant, job_id)
    owner = job.reused_from or job.id
    return list(session.scalars(select(Artifact).where(Artifact.job_id == owner).order_by(Artifact.created_at)))


def get_artifact(session: Session, tenant: str, artifact_id: str) -> Artifact:
    artifact = session.scalar(select(Artifact).where(Artifact.id == artifact_id, Artifact.tenant == tenant))
    if artifact is None:
        raise NotFound(f"no artifact {artifact_id!r}: list a job's with GET /v1/jobs/{{id}}/artifacts")
    return artifact
