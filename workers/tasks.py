"""Thin tasks: claim the job in the database, run its pipeline in the sandbox, record the outcome."""

import hashlib
import json
import logging
import shutil
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.db import transitions
from app.db.models import Artifact, Dataset, new_id
from app.db.session import session_scope
from app.queue import RUN_JOB_TASK
from app.schemas.datasets import dataset_refs
from app.settings import Settings, get_settings
from app.storage import Store, open_store
from workers.celery_app import celery
from workers.sandbox import Outcome, run_child

log = logging.getLogger(__name__)
MEDIA_TYPES = {"onnx": "application/octet-stream", "json": "application/json", "pt2": "application/zip",
               "torchscript": "application/zip"}
"""pt2 (ExportedProgram) and TorchScript files are zip archives"""


@celery.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    execute(job_id, get_settings())


def execute(job_id: str, settings: Settings) -> None:
    url = settings.effective_database_url
    with session_scope(url) as session:
        claim = transitions.claim(session, job_id, f"{socket.gethostname()}:{celery.main}")
    if claim is None:
        log.info("job %s is not queued any more; nothing to do", job_id)
        return
    store = open_store(settings.effective_storage_url)
    workdir = settings.home / "work" / f"{job_id}-attempt{claim.attempt}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        outcome = _run(claim, settings, store, workdir)
        if outcome.status == "ok" and outcome.result is not None:
            _record_success(claim, settings, store, workdir, outcome.result)
        else:
            with session_scope(url) as session:
                transitions.end(session, job_id, claim.attempt, "cancelled" if outcome.status == "cancelled"
                                else "failed", outcome.code, outcome.message)
    except Exception as exc:  # our own bug or the store failing: the job must not stay running
        log.exception("job %s failed in the worker", job_id)
        with session_scope(url) as session:
            transitions.end(session, job_id, claim.attempt, "failed", "internal_error",
                            f"the worker failed while handling the job: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(claim: transitions.Claim, settings: Settings, store: Store, workdir: Path) -> Outcome:
    url = settings.effective_database_url
    store.get_file(claim.model["storage_key"], workdir / "upload")
    datasets = _fetch_datasets(claim, settings, store, workdir)
    if isinstance(datasets, Outcome):
        return datasets
    task = {"spec": claim.spec, "model": claim.model, "datasets": datasets, "threads": settings.job_threads,
            "max_unpacked_bytes": settings.max_upload_bytes * 4}
    (workdir / "task.json").write_text(json.dumps(task))

    def on_event(event: dict[str, Any]) -> None:
        with session_scope(url) as session:
            transitions.record_progress(session, claim.job_id, claim.attempt, float(event["progress"]),
                                        str(event["pass"]))

    def should_cancel() -> bool:
        with session_scope(url) as session:
            return transitions.cancel_requested(session, claim.job_id)

    return run_child(workdir, timeout_s=settings.job_timeout_s, memory_bytes=settings.job_memory_bytes,
                     threads=settings.job_threads, on_event=on_event, should_cancel=should_cancel,
                     poll_s=settings.cancel_poll_s)


def _fetch_datasets(claim: transitions.Claim, settings: Settings, store: Store,
                    workdir: Path) -> dict[str, dict[str, Any]] | Outcome:
    """Copy every dataset the spec references into WORKDIR/datasets/ for the child (which has no database
    access); a dataset deleted since submit fails the job."""
    ids = sorted({dataset_id for _, dataset_id in dataset_refs(claim.spec)})
    if not ids:
        return {}
    query = select(Dataset).where(Dataset.id.in_(ids), Dataset.tenant == claim.tenant)
    with session_scope(settings.effective_database_url) as session:
        found: dict[str, tuple[str, dict[str, Any]]] = {row.id: (row.storage_key, {
            "id": row.id, "format": row.format, "arrays": row.arrays, "samples": row.samples,
            "has_labels": row.has_labels, "sha256": row.sha256, "filename": row.filename,
            "path": f"datasets/{row.id}"}) for row in session.scalars(query)}
    gone = [i for i in ids if i not in found]
    if gone:
        return Outcome("failed", code="dataset_missing",
                       message=f"dataset(s) {gone} were deleted after the job was submitted; upload them "
                               "again and submit a new job")
    (workdir / "datasets").mkdir()
    for key, meta in found.values():
        store.get_file(key, workdir / meta["path"])
    return {dataset_id: meta for dataset_id, (_, meta) in found.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record_success(claim: transitions.Claim, settings: Settings, store: Store, workdir: Path,
                    result: dict[str, Any]) -> None:
    """Store the artifacts under this attempt, then register them with the result in one transaction."""
    prefix = f"jobs/{claim.job_id}/attempt-{claim.attempt}"
    files = [(workdir / a["path"], {**a, "id": new_id("art")}) for a in result["artifacts"]]
    report = result["report"]
    report["job_id"] = claim.job_id
    report["result"]["artifact_id"] = next((m["id"] for _, m in files if m["kind"] == "model"), None)
    report_path = workdir / "out" / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    files.append((report_path, {"id": new_id("art"), "name": "report.json", "kind": "report", "format": "json"}))
    rows, keys = [], []
    for path, meta in files:
        digest, size, key = _sha256(path), path.stat().st_size, f"{prefix}/{meta['name']}"
        store.put_file(key, path)
        keys.append(key)
        rows.append(Artifact(id=meta["id"], tenant=claim.tenant, job_id=claim.job_id, kind=meta["kind"],
                             name=meta["name"], format=meta["format"], media_type=MEDIA_TYPES[meta["format"]],
                             sha256=digest, size_bytes=size, storage_key=key))
    with session_scope(settings.effective_database_url) as session:
        recorded = transitions.succeed(session, claim.job_id, claim.attempt, report, rows)
    if not recorded:  # the attempt was taken from us (cancelled meanwhile): leave no orphan files
        for key in keys:
            store.delete(key)
