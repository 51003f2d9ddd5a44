"""Thin tasks: claim the job in the database, run its pipeline in the sandbox under a renewed lease,
record the outcome only while the lease is still ours.

Every worker also runs the maintenance loop (workers.leases) from start-up, and on SIGTERM lets its
job run for `shutdown_grace_s`, then hands it back to the queue: nothing stays `running` behind it.
"""

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from celery.signals import worker_ready, worker_shutting_down
from kombu.exceptions import ChannelError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.db import transitions
from app.db.models import Artifact, Dataset, new_id
from app.db.session import session_scope
from app.hashing import sha256_file
from app.queue import RUN_JOB_TASK, publish_job
from app.schemas.datasets import dataset_refs
from app.schemas.jobs import JobSpec
from app.schemas.tasks import ChildSucceeded, ChildTask, DatasetRecord, ModelRecord, Progress, RunJob
from app.services import searches
from app.services.isolation import isolation_state
from app.settings import Settings, get_settings
from app.storage import Store, open_store
from passes.planner import Plan, plan
from workers.celery_app import celery
from workers.evaluation import original_cache
from workers.leases import Heartbeat, maintenance_loop, publish_or_leave
from workers.sandbox import ChildLimits, Outcome, Prestart, kill_group, run_child
from workers.webhooks import notify_job_ended

log = logging.getLogger(__name__)
MEDIA_TYPES = {
    "onnx": "application/octet-stream",
    "json": "application/json",
    "pt2": "application/zip",
    "aoti": "application/zip",
    "torchscript": "application/zip",
    "openvino": "application/zip",
    "tflite": "application/octet-stream",
}
"""pt2 (ExportedProgram) and TorchScript files are zip archives; an OpenVINO IR is delivered as a zip of its
.xml and .bin"""
T = TypeVar("T")

_shutdown_deadline: float | None = None
"""Set (from a signal handler: a plain float, no locks) when the worker was asked to stop."""
_maintenance_stop = threading.Event()
PRESTART = Prestart()
"""This worker process's next child (workers.sandbox.Prestart)."""


def publish(job_id: str, queue: str) -> None:
    """Hand a job id to the broker (re-queued jobs, the sweep)."""
    publish_job(celery, job_id, queue, retries=1)


def pending(queue: str) -> int:
    """Messages waiting in the broker for `queue` (0 when the broker does not know the queue)."""
    with celery.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:  # Redis drops an empty queue's key: nothing waits
            return 0


@worker_ready.connect
def _start_maintenance(**_: Any) -> None:
    settings = get_settings()
    isolation_state(settings.job_isolation)  # probed and logged at start, not at the first job
    PRESTART.remove_leftovers(settings.home / "work")
    if settings.prestart_children:
        PRESTART.start(settings.home / "work", child_limits("cpu", settings), settings.home)
    threading.Thread(
        target=maintenance_loop, args=(settings, publish, pending, _maintenance_stop), name="maintenance", daemon=True
    ).start()


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    global _shutdown_deadline
    if _shutdown_deadline is None:
        _shutdown_deadline = time.monotonic() + get_settings().shutdown_grace_s
    _maintenance_stop.set()


@celery.task(name=RUN_JOB_TASK)
def run_job(message: dict[str, Any]) -> None:
    execute(RunJob.model_validate(message).job_id, get_settings())


def worker_id() -> str:
    """The lease owner name: host and process, unique among live workers."""
    return f"{socket.gethostname()}:{os.getpid()}"


def execute(job_id: str, settings: Settings) -> None:
    """Claim the job, run it under a renewed lease, record the outcome; a no-op unless the job is queued."""
    url = settings.effective_database_url
    with session_scope(url) as session:
        claim = transitions.claim(session, job_id, worker_id(), settings.lease_s)
    if claim is None:
        log.info("job %s is not queued (running under a live lease, or ended); nothing to do", job_id)
        return
    log.info("job %s: attempt %d (fence %d) claimed by %s", job_id, claim.attempt, claim.fence, worker_id())
    store = open_store(settings)
    workdir = settings.home / "work" / job_id / f"attempt-{claim.attempt}"
    shutil.rmtree(workdir, ignore_errors=True)
    limits = child_limits(JobSpec.model_validate(claim.spec).device, settings)
    prestarted = None
    try:
        with Heartbeat(settings, job_id, claim.fence) as heartbeat:  # the lease is renewed from here on
            prestarted = PRESTART.claim(workdir, limits)
            if prestarted is None:
                workdir.mkdir(parents=True)
            outcome = _run(claim, settings, store, workdir, heartbeat, limits, prestarted)
        _record(claim, settings, store, workdir, outcome)
    except Exception as exc:  # our own bug or the store failing: the job must not stay running
        log.exception("job %s failed in the worker", job_id)
        message = f"the worker failed while handling the job: {type(exc).__name__}: {exc}"
        _with_db_retry(settings, lambda s: transitions.end(s, job_id, claim.fence, "failed", "internal_error", message))
    finally:
        if prestarted is not None and prestarted.returncode is None:  # the job ended before it was handed over
            kill_group(prestarted)
        shutil.rmtree(workdir, ignore_errors=True)
        if not any(workdir.parent.iterdir()):
            workdir.parent.rmdir()
    notify_job_ended(job_id, settings)
    advance_search(claim.search_id, url)
    if settings.prestart_children and _shutdown_deadline is None:
        PRESTART.start(settings.home / "work", limits, settings.home)  # the next job's child


def child_limits(device: str, settings: Settings) -> ChildLimits:
    """A CUDA job's child has no address-space limit: the driver reserves far more than it uses."""
    return ChildLimits(
        None if device == "cuda" else settings.job_memory_bytes, settings.job_threads, settings.job_isolation
    )


def advance_search(search_id: str | None, url: str) -> None:
    """Move the job's search on (stop hopeless candidates, end it when all ended); skipped while the
    database is unreachable: reading the search, or the maintenance loop, advances it later."""
    if search_id is not None:
        _best_effort(url, lambda s: searches.advance(s, search_id))


def _run(
    claim: transitions.Claim,
    settings: Settings,
    store: Store,
    workdir: Path,
    heartbeat: Heartbeat,
    limits: ChildLimits,
    prestarted: subprocess.Popen[bytes] | None,
) -> Outcome:
    url = settings.effective_database_url
    store.get_file(claim.model["storage_key"], workdir / "upload")
    datasets = _fetch_datasets(claim, settings, store, workdir)
    if isinstance(datasets, Outcome):
        return datasets
    task = child_task(claim, datasets, settings, prestarted is not None)
    (workdir / "task.json").write_text(task.model_dump_json())
    if original_cache.fetch(store, original_cache.cache_key(task, claim.tenant, original_cache.fingerprint()), workdir):
        log.info("job %s: the original's figures were measured by an earlier job on this machine", claim.job_id)

    def on_start(pid: int) -> None:
        log.info("job %s: attempt %d runs in pipeline process %d", claim.job_id, claim.attempt, pid)
        _best_effort(url, lambda s: transitions.record_child(s, claim.job_id, claim.fence, pid))

    def on_event(event: Progress) -> None:
        interim = event.interim.model_dump() if event.interim else None
        _best_effort(
            url,
            lambda s: transitions.record_progress(s, claim.job_id, claim.fence, event.progress, event.current, interim),
        )
        if interim is not None:
            advance_search(claim.search_id, url)

    def should_stop() -> str | None:
        if heartbeat.lost.is_set():
            return "lease_lost"
        if _shutdown_deadline is not None and time.monotonic() > _shutdown_deadline:
            return "shutdown"
        cancelled = _best_effort(url, lambda s: transitions.cancel_requested(s, claim.job_id))
        return "cancelled" if cancelled else None

    return run_child(
        workdir,
        timeout_s=settings.job_timeout_s,
        limits=limits,
        on_event=on_event,
        should_stop=should_stop,
        squeeze_home=settings.home,
        prestarted=prestarted,
        on_start=on_start,
        poll_s=settings.cancel_poll_s,
    )


def child_task(
    claim: transitions.Claim, datasets: dict[str, DatasetRecord], settings: Settings, prestarted: bool = False
) -> ChildTask:
    """task.json. A job submitted before plans were stored is planned now, from its stored spec."""
    spec = JobSpec.model_validate(claim.spec)
    model = ModelRecord.model_validate({k: v for k, v in claim.model.items() if k != "storage_key"})
    return ChildTask(
        spec=spec,
        plan=Plan.model_validate(claim.plan) if claim.plan else plan(spec.passes, model.format),
        model=model,
        datasets=datasets,
        threads=settings.job_threads,
        max_unpacked_bytes=settings.max_upload_bytes * 4,
        floors=settings.fidelity_floors,
        prestarted=prestarted,
    )


def _record(claim: transitions.Claim, settings: Settings, store: Store, workdir: Path, outcome: Outcome) -> None:
    """Write the attempt's outcome, fenced: a claim that lost its lease writes nothing."""
    job_id, fence = claim.job_id, claim.fence
    if outcome.status == "ok" and outcome.result is not None:
        _record_success(claim, settings, store, workdir, outcome.result)
    elif outcome.status == "stopped" and outcome.code == "shutdown":
        if _with_db_retry(settings, lambda s: transitions.hand_back(s, job_id, fence)):
            log.warning("job %s: worker stopping, job handed back to the queue", job_id)
            publish_or_leave(settings, publish, job_id, claim.queue)
    elif outcome.status == "stopped":
        log.warning(
            "job %s: attempt %d abandoned (%s); its result is not recorded", job_id, claim.attempt, outcome.code
        )
    elif outcome.retryable:
        status = _with_db_retry(
            settings,
            lambda s: transitions.retry_or_fail(
                s, job_id, fence, settings.max_attempts, str(outcome.code), str(outcome.message)
            ),
        )
        log.warning("job %s: attempt %d died (%s); job is now %s", job_id, claim.attempt, outcome.code, status)
        if status == "queued":
            publish_or_leave(settings, publish, job_id, claim.queue)
    else:
        _with_db_retry(
            settings,
            lambda s: transitions.end(
                s,
                job_id,
                fence,
                "cancelled" if outcome.status == "cancelled" else "failed",
                outcome.code,
                outcome.message,
            ),
        )


def _best_effort(url: str, write: Callable[[Any], T]) -> T | None:
    """Progress and cancel checks: skipped while the database is unreachable (the lease covers the gap)."""
    try:
        with session_scope(url) as session:
            return write(session)
    except SQLAlchemyError as exc:
        log.warning("database unavailable, skipped a progress write or cancel check: %s", exc)
        return None


def _with_db_retry(settings: Settings, write: Callable[[Any], T]) -> T | None:
    """An outcome write, retried while the database is unreachable for up to `db_retry_s`. If it never
    lands, the lease expires and the reaper re-queues the job: late, but not lost."""
    deadline = time.monotonic() + settings.db_retry_s
    delay = 0.5
    while True:
        try:
            with session_scope(settings.effective_database_url) as session:
                return write(session)
        except SQLAlchemyError as exc:
            if time.monotonic() + delay > deadline:
                log.error("could not record a job outcome, leaving it to the reaper: %s", exc)
                return None
            log.warning("database unavailable, retrying an outcome write in %.1f s: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _fetch_datasets(
    claim: transitions.Claim, settings: Settings, store: Store, workdir: Path
) -> dict[str, DatasetRecord] | Outcome:
    """Copy every dataset the spec references into WORKDIR/datasets/ for the child (which has no database
    access); a dataset deleted since submit fails the job."""
    ids = sorted({dataset_id for _, dataset_id in dataset_refs(claim.spec)})
    if not ids:
        return {}
    query = select(Dataset).where(Dataset.id.in_(ids), Dataset.tenant == claim.tenant)
    with session_scope(settings.effective_database_url) as session:
        found = {
            row.id: (
                row.storage_key,
                DatasetRecord(
                    id=row.id,
                    format=row.format,  # type: ignore[arg-type]
                    arrays=row.arrays,
                    samples=row.samples,
                    has_labels=row.has_labels,
                    sha256=row.sha256,
                    filename=row.filename,
                    path=f"datasets/{row.id}",
                ),
            )
            for row in session.scalars(query)
        }
    gone = [i for i in ids if i not in found]
    if gone:
        return Outcome(
            "failed",
            code="dataset_missing",
            message=f"dataset(s) {gone} were deleted after the job was submitted; upload them "
            "again and submit a new job",
        )
    (workdir / "datasets").mkdir()
    for key, record in found.values():
        store.get_file(key, workdir / record.path)
    return {dataset_id: record for dataset_id, (_, record) in found.items()}


def _record_success(
    claim: transitions.Claim, settings: Settings, store: Store, workdir: Path, result: ChildSucceeded
) -> None:
    """Store the artifacts under this job and attempt, then register them with the result in one fenced
    transaction: only the winning attempt's artifacts are ever registered."""
    prefix = f"jobs/{claim.job_id}/attempt-{claim.attempt}"
    files = [(workdir / a.path, {**a.model_dump(), "id": new_id("art")}) for a in result.artifacts]
    report = result.report
    report.job_id = claim.job_id
    report.attempt = claim.attempt
    report.result.artifact_id = next((m["id"] for _, m in files if m["kind"] == "model"), None)
    if report.result.aoti is not None:
        report.result.aoti.artifact_id = next((m["id"] for _, m in files if m["format"] == "aoti"), None)
    report_path = workdir / "out" / "report.json"
    report_path.write_text(report.model_dump_json(indent=2))
    files.append((report_path, {"id": new_id("art"), "name": "report.json", "kind": "report", "format": "json"}))
    rows, keys = [], []
    for path, meta in files:
        digest, size, key = sha256_file(path), path.stat().st_size, f"{prefix}/{meta['name']}"
        store.put_file(key, path)
        keys.append(key)
        rows.append(
            Artifact(
                id=meta["id"],
                tenant=claim.tenant,
                job_id=claim.job_id,
                kind=meta["kind"],
                name=meta["name"],
                format=meta["format"],
                media_type=MEDIA_TYPES[meta["format"]],
                sha256=digest,
                size_bytes=size,
                storage_key=key,
            )
        )
    stored = report.model_dump(mode="json")
    verdict = report.constraints
    missed = verdict.reason if verdict.verdict == "fail" else None
    recorded = _with_db_retry(
        settings, lambda s: transitions.succeed(s, claim.job_id, claim.fence, stored, rows, missed)
    )
    if not recorded:  # the claim was taken from us (lease lost, cancelled): leave no orphan files
        log.warning(
            "job %s: attempt %d lost its claim before recording; its artifacts are removed", claim.job_id, claim.attempt
        )
        for key in keys:
            store.delete(key)
        return
    keep_original_figures(claim, store, workdir)
    # An earlier attempt killed between storing its files and committing left them unregistered: remove them.
    names = [meta["name"] for _, meta in files]
    for earlier in range(1, claim.attempt):
        for name in names:
            store.delete(f"jobs/{claim.job_id}/attempt-{earlier}/{name}")


def keep_original_figures(claim: transitions.Claim, store: Store, workdir: Path) -> None:
    """Store what the child measured of the original (workers.evaluation.original_cache) for later jobs."""
    task = ChildTask.model_validate_json((workdir / "task.json").read_text())
    machine = original_cache.fingerprint()
    key = original_cache.cache_key(task, claim.tenant, machine)
    try:
        if original_cache.keep(store, key, workdir, claim.job_id, machine):
            log.info("job %s: the original's figures are kept for later jobs on this model", claim.job_id)
    except Exception:  # the cache is an optimisation: a store failure here must not touch the recorded job
        log.exception("job %s: could not store the original's figures for reuse", claim.job_id)
