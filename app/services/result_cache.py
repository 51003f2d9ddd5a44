"""The result cache: a job whose model (by sha256), datasets (by sha256) and canonical spec equal an earlier
succeeded job of the same tenant returns that job's result at once, without running.

A reused job is inserted already `succeeded`, its report and artifact listing those of the job it reused, in
the one transaction that records it: there is no moment when it is half-written, and it never enters the
queue, so no attempt of it (first or re-queued) can produce a second result. The key leaves out what does
not change the result: the ids (the model and datasets count by their bytes), `cache` itself and the webhook.
A job with a webhook always runs: webhooks are delivered by the worker that ends a job, and a client that
asked to be called back expects a call (send `"cache": false` or drop the webhook to decide otherwise).
"""

import hashlib
import json
from copy import deepcopy
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Job, utcnow
from app.schemas.jobs import JobSpec

IGNORED = ("model_id", "cache", "webhook")
"""Spec fields that do not change what a job computes."""


def cacheable(spec: JobSpec) -> bool:
    return spec.cache and spec.webhook is None


def _by_content(value: Any, datasets: dict[str, dict[str, Any]]) -> Any:
    """The spec with every `dataset_id` replaced by that dataset's sha256."""
    if isinstance(value, dict):
        return {
            k: f"sha256:{datasets[v]['sha256']}" if k == "dataset_id" and v in datasets else _by_content(v, datasets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_by_content(v, datasets) for v in value]
    return value


def cache_key(canonical: dict[str, Any], model_sha256: str, datasets: dict[str, dict[str, Any]]) -> str:
    """sha256 of the model's content, the datasets' contents and the canonical spec (keys sorted)."""
    spec = {k: v for k, v in canonical.items() if k not in IGNORED}
    body = {"model": model_sha256, "spec": _by_content(spec, datasets)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def find_source(session: Session, tenant: str, key: str) -> Job | None:
    """The first job of `tenant` that ran with this key and succeeded (a job that ran, never a reuse)."""
    query = (
        select(Job)
        .where(Job.tenant == tenant, Job.cache_key == key, Job.status == "succeeded", Job.reused_from.is_(None))
        .order_by(Job.finished_at, Job.id)
        .limit(1)
    )
    return session.scalar(query)


def reuse(job: Job, source: Job) -> None:
    """Make the new (not yet committed) `job` the succeeded twin of `source`: its report, nothing queued."""
    now = utcnow()
    report = deepcopy(source.report) or {}
    report["job_id"] = job.id
    report["reused_from"] = source.id
    job.status = "succeeded"
    job.progress = 1.0
    job.report = report
    job.reused_from = source.id
    job.started_at = now
    job.finished_at = now
    job.published_at = None
