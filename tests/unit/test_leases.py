"""Lease transitions against a real SQLite database: one claim per job, fenced writes, the reaper's
re-queue and give-up, hand-back on shutdown, one publisher per swept job."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from app.db import transitions
from app.db.migrate import upgrade_to_head
from app.db.models import Artifact, Job, Model, new_id, utcnow
from app.db.session import session_scope
from app.settings import Settings
from workers.leases import reap_and_sweep


@pytest.fixture()
def url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'leases.db'}"
    upgrade_to_head(url)
    with session_scope(url) as session:
        session.add(
            Model(
                id="mdl_1",
                tenant="t",
                filename="m.onnx",
                format="onnx",
                sha256="0" * 64,
                size_bytes=1,
                storage_key="models/mdl_1/upload",
                inputs=[],
                outputs=[],
                details={},
            )
        )
    yield url


def queued_job(url: str) -> str:
    job_id = new_id("job")
    with session_scope(url) as session:
        session.add(
            Job(
                id=job_id,
                tenant="t",
                model_id="mdl_1",
                spec={},
                queue="cpu",
                status="queued",
                progress=0.0,
                attempts=0,
                cancel_requested=False,
                published_at=utcnow(),
            )
        )
    return job_id


def row(url: str, job_id: str) -> Job:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def claim(url: str, job_id: str, worker: str = "w1") -> transitions.Claim | None:
    with session_scope(url) as session:
        return transitions.claim(session, job_id, worker, lease_s=30)


def expire(url: str, job_id: str) -> None:
    with session_scope(url) as session:
        past = utcnow() - timedelta(seconds=1)
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=past))


def test_a_job_is_claimed_once_and_a_redelivery_does_nothing(url: str) -> None:
    job_id = queued_job(url)
    first = claim(url, job_id)
    assert first is not None and first.attempt == 1 and first.fence == 1
    assert claim(url, job_id, "w2") is None, "a second delivery while the lease lives is ignored"
    job = row(url, job_id)
    assert job.status == "running" and job.lease_owner == "w1" and job.lease_expires_at is not None


def test_a_taken_over_claim_cannot_renew_record_or_register_artifacts(url: str) -> None:
    job_id = queued_job(url)
    old = claim(url, job_id)
    assert old is not None
    expire(url, job_id)
    assert reap_and_sweep(Settings(database_url=url), lambda *_: None, lambda _: 0) == (1, 0)
    new = claim(url, job_id, "w2")
    assert new is not None and new.fence == old.fence + 1 and new.attempt == 2
    with session_scope(url) as session:
        assert not transitions.renew(session, job_id, old.fence, 30), "the old lease is gone"
    artifact = Artifact(
        id=new_id("art"),
        tenant="t",
        job_id=job_id,
        kind="model",
        name="model.onnx",
        format="onnx",
        media_type="application/octet-stream",
        sha256="0" * 64,
        size_bytes=1,
        storage_key="k",
    )
    with session_scope(url) as session:
        assert not transitions.succeed(session, job_id, old.fence, {"late": True}, [artifact])
    with session_scope(url) as session:
        assert transitions.renew(session, job_id, new.fence, 30)
    job = row(url, job_id)
    assert job.status == "running" and job.report is None, "the late result was not recorded"


def test_the_reaper_gives_up_after_max_attempts_with_worker_lost(url: str) -> None:
    job_id = queued_job(url)
    published: list[str] = []
    settings = Settings(database_url=url, max_attempts=2)
    for _ in range(2):
        assert claim(url, job_id) is not None
        expire(url, job_id)
        reap_and_sweep(settings, lambda job, queue: published.append(job), lambda _: 0)
    job = row(url, job_id)
    assert job.status == "failed" and job.error_code == "worker_lost" and job.attempts == 2
    assert published == [job_id], "re-queued once (and published), then failed"


def test_hand_back_returns_the_job_without_counting_the_attempt(url: str) -> None:
    job_id = queued_job(url)
    taken = claim(url, job_id)
    assert taken is not None
    with session_scope(url) as session:
        assert transitions.hand_back(session, job_id, taken.fence)
    job = row(url, job_id)
    assert job.status == "queued" and job.attempts == 0 and job.fence == 1 and job.lease_owner is None


def test_the_sweep_publishes_old_jobs_once_and_waits_while_their_queue_drains(url: str) -> None:
    old, never = queued_job(url), queued_job(url)
    with session_scope(url) as session:
        session.execute(update(Job).where(Job.id == old).values(published_at=utcnow() - timedelta(hours=1)))
        transitions.mark_unpublished(session, never)
    settings = Settings(database_url=url, requeue_after_s=60)
    published: list[str] = []
    assert reap_and_sweep(settings, lambda job, queue: published.append(job), lambda _: 3) == (0, 1)
    assert published == [never], "a never-published job goes out at once; an old one waits for the queue"
    assert reap_and_sweep(settings, lambda job, queue: published.append(job), lambda _: 0) == (0, 1)
    assert published == [never, old]
    assert reap_and_sweep(settings, lambda job, queue: published.append(job), lambda _: 0) == (0, 0), (
        "just published: not again until requeue_after_s"
    )
