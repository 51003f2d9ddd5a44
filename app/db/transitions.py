"""Job state transitions as conditional updates: a transition only happens from the state it expects,
and a worker's writes only land while it still holds the lease (the fence) it claimed.

A claim takes a queued job (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: `BEGIN IMMEDIATE`, which waits up
to the busy timeout for the one write lock), counts an attempt, bumps the fence and starts a lease. The
worker renews the lease while the pipeline runs; a job whose lease expired is re-queued by whichever
worker's reaper sees it first, and every write of the old worker then matches no row.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session

from app.db.models import Artifact, Job, Model, utcnow


@dataclass
class Claim:
    job_id: str
    attempt: int
    fence: int
    queue: str
    spec: dict[str, Any]
    plan: dict[str, Any] | None
    tenant: str
    model: dict[str, Any]
    search_id: str | None = None


def _begin_write(session: Session) -> None:
    """SQLite: take the write lock before reading, so a read-then-write transaction never fails half-way
    with "database is locked" (a deferred transaction cannot wait for the lock once it has read)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))


def _lock_row(session: Session, *conditions: Any, skip_locked: bool = False) -> Any:
    query = select(Job.id, Job.fence, Job.attempts, Job.queue, Job.cancel_requested).where(*conditions)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=skip_locked)
    return session.execute(query).one_or_none()


def claim(session: Session, job_id: str, worker: str, lease_s: float) -> Claim | None:
    """Take a queued job for this worker; None if it is not queued (running under a live lease, ended,
    cancelled, or another worker is claiming it right now)."""
    _begin_write(session)
    row = _lock_row(
        session, Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False), skip_locked=True
    )
    if row is None:
        session.rollback()
        return None
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="running",
            attempts=Job.attempts + 1,
            fence=Job.fence + 1,
            started_at=now,
            worker=worker,
            lease_owner=worker,
            lease_expires_at=now + timedelta(seconds=lease_s),
            child_pid=None,
            current_pass="load",
            progress=0.0,
            error_code=None,
            error_message=None,
        )
    )
    job = session.scalars(select(Job).where(Job.id == job_id)).one()
    model = session.scalars(select(Model).where(Model.id == job.model_id)).one()
    result = Claim(
        job.id,
        job.attempts,
        job.fence,
        job.queue,
        job.spec,
        job.plan,
        job.tenant,
        {
            "storage_key": model.storage_key,
            "format": model.format,
            "inputs": model.inputs,
            "outputs": model.outputs,
            "details": model.details,
            "size_bytes": model.size_bytes,
            "param_count": model.param_count,
            "sha256": model.sha256,
            "id": model.id,
        },
        job.search_id,
    )
    session.commit()
    return result


def _mine(job_id: str, fence: int) -> Any:
    return update(Job).where(Job.id == job_id, Job.status == "running", Job.fence == fence)


def renew(session: Session, job_id: str, fence: int, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer this claim's (taken over, cancelled, ended)."""
    expires = utcnow() + timedelta(seconds=lease_s)
    result = session.execute(_mine(job_id, fence).values(lease_expires_at=expires))
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def record_child(session: Session, job_id: str, fence: int, pid: int) -> None:
    """Note the attempt's pipeline process id, so an operator can find (or kill) it."""
    session.execute(_mine(job_id, fence).values(child_pid=pid))
    session.commit()


def record_progress(
    session: Session, job_id: str, fence: int, progress: float, current_pass: str, interim: dict[str, Any] | None = None
) -> None:
    """Progress, and the figures after a finished step when the event carries them."""
    extra = {"interim": interim} if interim is not None else {}
    session.execute(_mine(job_id, fence).values(progress=progress, current_pass=current_pass, **extra))
    session.commit()


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def succeed(
    session: Session,
    job_id: str,
    fence: int,
    report: dict[str, Any],
    artifacts: list[Artifact],
    missed: str | None = None,
) -> bool:
    """Record the result and its artifacts together; False (nothing written) if the claim is not ours. A
    result whose verdict failed (`missed`: the verdict's reason) ends `failed` with `constraints_not_met`,
    its report and artifacts kept so the user can see what it missed: a pipeline polling the status never
    reads `succeeded` for a model below its floor."""
    _begin_write(session)
    result = session.execute(
        _mine(job_id, fence).values(
            status="succeeded" if missed is None else "failed",
            error_code=None if missed is None else "constraints_not_met",
            error_message=None if missed is None else f"the result missed its constraints: {missed}",
            progress=1.0,
            current_pass=None,
            report=report,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
            child_pid=None,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    session.add_all(artifacts)
    session.commit()
    return True


def end(session: Session, job_id: str, fence: int, status: str, code: str | None, message: str | None) -> bool:
    """Mark the attempt failed or cancelled, with the error a client will read."""
    result = session.execute(
        _mine(job_id, fence).values(
            status=status,
            current_pass=None,
            error_code=code,
            error_message=message,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
            child_pid=None,
        )
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


_BACK_TO_QUEUE: dict[str, Any] = {
    "status": "queued",
    "lease_owner": None,
    "lease_expires_at": None,
    "child_pid": None,
    "current_pass": None,
    "progress": 0.0,
}


def retry_or_fail(session: Session, job_id: str, fence: int, max_attempts: int, code: str, message: str) -> str | None:
    """After an attempt died (its worker or its pipeline): back to `queued` while attempts remain, else
    `failed` with `code`; `cancelled` if the client asked meanwhile. None if the claim is not current."""
    _begin_write(session)
    row = _lock_row(session, Job.id == job_id, Job.status == "running", Job.fence == fence)
    if row is None:
        session.rollback()
        return None
    now = utcnow()
    if row.cancel_requested:
        values: dict[str, Any] = {
            "status": "cancelled",
            "error_code": "cancelled",
            "finished_at": now,
            "error_message": "cancelled by the client",
            "current_pass": None,
        }
    elif row.attempts >= max_attempts:
        values = {
            "status": "failed",
            "error_code": code,
            "finished_at": now,
            "current_pass": None,
            "error_message": f"{message} (gave up after {row.attempts} attempts)",
        }
    else:
        values = {**_BACK_TO_QUEUE, "published_at": now}
    released = {"lease_owner": None, "lease_expires_at": None, "child_pid": None}
    result = session.execute(_mine(job_id, fence).values(**{**released, **values}))
    session.commit()
    return str(values["status"]) if result.rowcount == 1 else None  # type: ignore[attr-defined]


def hand_back(session: Session, job_id: str, fence: int) -> bool:
    """A stopping worker returns its job to the queue; the attempt does not count against the job."""
    result = session.execute(
        _mine(job_id, fence).values(attempts=Job.attempts - 1, published_at=utcnow(), **_BACK_TO_QUEUE)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def expired_leases(session: Session) -> list[tuple[str, int, str]]:
    """(job id, fence, queue) of running jobs whose lease ran out: their worker died or is cut off."""
    now = utcnow()
    rows = session.execute(
        select(Job.id, Job.fence, Job.queue).where(
            Job.status == "running", or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
        )
    )
    result = [(r.id, r.fence, r.queue) for r in rows]
    session.commit()
    return result


def unpublished(session: Session, requeue_after_s: float, limit: int = 500) -> list[tuple[str, str, datetime | None]]:
    """(job id, queue, published_at) of queued jobs whose last message is older than `requeue_after_s`,
    or was never sent: the broker may have lost it."""
    cutoff = utcnow() - timedelta(seconds=requeue_after_s)
    rows = session.execute(
        select(Job.id, Job.queue, Job.published_at)
        .where(Job.status == "queued", or_(Job.published_at.is_(None), Job.published_at < cutoff))
        .order_by(Job.created_at)
        .limit(limit)
    )
    result = [(r.id, r.queue, r.published_at) for r in rows]
    session.commit()
    return result


def mark_published(session: Session, job_id: str, previous: datetime | None) -> bool:
    """Record a (re)publish; True for exactly one of several workers sweeping the same job."""
    same = Job.published_at.is_(None) if previous is None else Job.published_at == previous
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == "queued", same).values(published_at=utcnow())
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_unpublished(session: Session, job_id: str) -> None:
    """The publish failed: the next sweep publishes the job as soon as it runs."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(published_at=None))
    session.commit()
