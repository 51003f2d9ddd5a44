"""Job state transitions as conditional updates: a transition only happens from the state it expects,
and a worker's writes only land while it still holds the attempt it claimed."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Artifact, Job, Model, utcnow


@dataclass
class Claim:
    job_id: str
    attempt: int
    spec: dict[str, Any]
    tenant: str
    model: dict[str, Any]


def claim(session: Session, job_id: str, worker: str) -> Claim | None:
    """Take a queued job for this worker; None if it is not queued (already taken, ended or cancelled)."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
        .values(status="running", attempts=Job.attempts + 1, started_at=utcnow(), worker=worker,
                current_pass="load", progress=0.0, error_code=None, error_message=None))
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = session.scalars(select(Job).where(Job.id == job_id)).one()
    model = session.scalars(select(Model).where(Model.id == job.model_id)).one()
    return Claim(job.id, job.attempts, job.spec, job.tenant, {
        "storage_key": model.storage_key, "format": model.format, "inputs": model.inputs, "outputs": model.outputs,
        "details": model.details, "size_bytes": model.size_bytes, "param_count": model.param_count,
        "sha256": model.sha256, "id": model.id})


def _mine(job_id: str, attempt: int) -> Any:
    return update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)


def record_progress(session: Session, job_id: str, attempt: int, progress: float, current_pass: str) -> None:
    session.execute(_mine(job_id, attempt).values(progress=progress, current_pass=current_pass))
    session.commit()


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def succeed(session: Session, job_id: str, attempt: int, report: dict[str, Any], artifacts: list[Artifact]) -> bool:
    """Record the result and its artifacts together; False (nothing written) if the attempt is no longer ours."""
    result = session.execute(_mine(job_id, attempt).values(
        status="succeeded", progress=1.0, current_pass=None, report=report, finished_at=utcnow()))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    session.add_all(artifacts)
    session.commit()
    return True


def end(session: Session, job_id: str, attempt: int, status: str, code: str | None, message: str | None) -> bool:
    """Mark the attempt failed or cancelled, with the error a client will read."""
    result = session.execute(_mine(job_id, attempt).values(
        status=status, current_pass=None, error_code=code, error_message=message, finished_at=utcnow()))
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
