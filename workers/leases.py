"""The worker's side of leases: a heartbeat that keeps the running job's lease alive, and the
maintenance loop every worker runs (reaper + sweep), safe to run many times at once because each of
its writes is a conditional update that only one worker wins."""

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from app.db import transitions
from app.db.session import session_scope
from app.services import searches
from app.settings import Settings

log = logging.getLogger(__name__)

Publish = Callable[[str, str], None]
"""publish(job_id, queue)"""
Pending = Callable[[str], int]
"""pending(queue): messages the broker holds for the queue, not yet delivered."""


class Heartbeat:
    """Renews one claim's lease every `heartbeat_s` in a thread; `lost` is set once the lease is gone
    (taken over, or not renewable for a whole lease period because the database is unreachable)."""

    def __init__(self, settings: Settings, job_id: str, fence: int) -> None:
        self.settings, self.job_id, self.fence = settings, job_id, fence
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.heartbeat_s + 5)

    def _run(self) -> None:
        settings = self.settings
        renewed = time.monotonic()
        while not self._stop.wait(settings.heartbeat_s):
            try:
                with session_scope(settings.effective_database_url) as session:
                    mine = transitions.renew(session, self.job_id, self.fence, settings.lease_s)
            except SQLAlchemyError as exc:
                if time.monotonic() - renewed < settings.lease_s:
                    log.warning("job %s: lease renewal failed, retrying: %s", self.job_id, exc)
                    continue
                log.error(
                    "job %s: could not renew the lease for %.0f s; giving the job up", self.job_id, settings.lease_s
                )
                mine = False
            if not mine:
                log.warning("job %s: lease %d is no longer ours; stopping its pipeline", self.job_id, self.fence)
                self.lost.set()
                return
            renewed = time.monotonic()


def reap_and_sweep(settings: Settings, publish: Publish, pending: Pending) -> tuple[int, int]:
    """One maintenance pass: re-queue (or fail with `worker_lost`) jobs whose lease expired, then
    publish queued jobs whose message is old or was never sent. Returns (reaped, published).

    A queue with messages still waiting is being drained: its old jobs may simply be waiting their turn,
    so they are re-published only once the broker holds nothing for that queue (or never were published)."""
    url = settings.effective_database_url
    reaped = published = 0
    with session_scope(url) as session:
        expired = transitions.expired_leases(session)
    for job_id, fence, queue in expired:
        with session_scope(url) as session:
            status = transitions.retry_or_fail(
                session,
                job_id,
                fence,
                settings.max_attempts,
                "worker_lost",
                "the worker running this job stopped answering (its lease expired)",
            )
        if status is not None:
            reaped += 1
            log.warning("job %s: lease %d expired; job is now %s", job_id, fence, status)
        if status == "queued":
            publish_or_leave(settings, publish, job_id, queue)
    with session_scope(url) as session:
        stale = transitions.unpublished(session, settings.requeue_after_s)
    draining: dict[str, bool] = {}
    for job_id, queue, previous in stale:
        if previous is not None:
            if queue not in draining:
                draining[queue] = pending(queue) > 0
            if draining[queue]:
                continue
        with session_scope(url) as session:
            if not transitions.mark_published(session, job_id, previous):
                continue  # another worker's sweep took it
        if not publish_or_leave(settings, publish, job_id, queue):
            break  # the broker is down: the next pass tries again
        published += 1
    return reaped, published


def publish_or_leave(settings: Settings, publish: Publish, job_id: str, queue: str) -> bool:
    """Publish a queued job; if the broker refuses, mark it unpublished so the next sweep sends it."""
    try:
        publish(job_id, queue)
        return True
    except Exception as exc:  # any broker failure: the database still has the job queued
        log.warning("job %s: could not publish (%s); the next sweep retries", job_id, exc)
        with session_scope(settings.effective_database_url) as session:
            transitions.mark_unpublished(session, job_id)
        return False


def maintenance_loop(settings: Settings, publish: Publish, pending: Pending, stop: threading.Event) -> None:
    """reap_and_sweep (and cut the searches past their wall time) at start-up and every `reaper_interval_s`
    until `stop`; survives outages."""
    while True:
        try:
            reaped, published = reap_and_sweep(settings, publish, pending)
            if reaped or published:
                log.info("maintenance: %d expired lease(s) reaped, %d job(s) published", reaped, published)
            with session_scope(settings.effective_database_url) as session:
                overdue = searches.advance_overdue(session)
            if overdue:
                log.info("maintenance: %d search(es) past their budget's wall time cut", overdue)
        except SQLAlchemyError as exc:
            log.warning("maintenance pass skipped, database unavailable: %s", exc)
        except Exception:  # the broker down, or a bug: log it, and keep the loop (and the reaper) alive
            log.exception("maintenance pass failed; retrying in %.0f s", settings.reaper_interval_s)
        if stop.wait(settings.reaper_interval_s):
            return
