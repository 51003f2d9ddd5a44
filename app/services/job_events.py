"""Status changes of jobs, told to the requests waiting for them: the long-poll (`GET /v1/jobs/{id}?wait=N`)
and the server-sent events stream (`GET /v1/jobs/{id}/events`).

The database stays the truth: whichever process changed a job (a worker on another host, another API
replica, the reaper), one watcher per API process sees it by reading the status columns of every job its
requests wait on, in one query every STATUS_POLL_S, and only while someone waits. A job's status tag (its
ETag) is a digest of exactly those columns, so a tag that differs is a change a client can see.
"""

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.db.models import Job
from app.db.session import session_scope

log = logging.getLogger(__name__)

STATUS_COLUMNS = (
    Job.status,
    Job.progress,
    Job.current_pass,
    Job.attempts,
    Job.error_code,
    Job.started_at,
    Job.finished_at,
)
"""What a job's status read shows that changes; the rest (spec, plan, model, queue) is fixed at submit."""
_CHUNK = 500
"""Ids per IN (...) of the watcher's query."""


def status_tag(values: Sequence[Any]) -> str:
    """The ETag of a job's status, from the values of STATUS_COLUMNS in their order."""
    text = "|".join(v.isoformat() if isinstance(v, datetime) else repr(v) for v in values)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:20] + '"'


def job_tag(job: Job) -> str:
    return status_tag([getattr(job, column.key) for column in STATUS_COLUMNS])


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (weak or strong, one of a list, or `*`)."""
    if not if_none_match:
        return False
    given = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return tag in given or "*" in given


class JobWatcher:
    """Wakes the requests waiting on jobs when the jobs' status tags change."""

    def __init__(self, database_url: str, poll_s: float) -> None:
        self.database_url, self.poll_s = database_url, poll_s
        self._waiting: dict[str, list[tuple[str, asyncio.Event]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def changed(self, job_id: str, tag: str, timeout_s: float) -> bool:
        """Wait until the job's status tag is no longer `tag` (True), or `timeout_s` passes (False)."""
        entry = (tag, asyncio.Event())
        self._waiting.setdefault(job_id, []).append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())
        try:
            await asyncio.wait_for(entry[1].wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiting.get(job_id, [])
            waiters.remove(entry)
            if not waiters:
                self._waiting.pop(job_id, None)

    async def _watch(self) -> None:
        """Poll while anyone waits; a database error is logged and the next poll tries again."""
        while self._waiting:
            await asyncio.sleep(self.poll_s)
            ids = list(self._waiting)
            try:
                tags = await asyncio.to_thread(self._read_tags, ids)
            except SQLAlchemyError as exc:  # the database is away for a moment: waiters keep waiting
                log.warning("job watcher could not read job status: %s", exc)
                continue
            for job_id in ids:
                for tag, event in self._waiting.get(job_id, []):
                    if tags.get(job_id) != tag:
                        event.set()

    def _read_tags(self, ids: list[str]) -> dict[str, str]:
        tags: dict[str, str] = {}
        with session_scope(self.database_url) as session:
            for start in range(0, len(ids), _CHUNK):
                query = select(Job.id, *STATUS_COLUMNS).where(Job.id.in_(ids[start : start + _CHUNK]))
                for row in session.execute(query):
                    tags[row[0]] = status_tag(row[1:])
        return tags
