"""Datasets: accept an upload (inspect, store, record), read, list, delete, and resolve a job spec's
dataset references against the tenant's datasets and the job's model."""

import asyncio
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dataset, Job, Model, new_id
from app.errors import Conflict, DatasetMismatch, NotFound, ValidationFailed
from app.schemas.datasets import check_fit, dataset_refs
from app.services.dataset_inspection import inspect_dataset
from app.services.uploads import ReceivedUpload
from app.settings import Settings
from app.storage import Store


async def create_dataset(
    session: Session, store: Store, settings: Settings, tenant: str, upload: ReceivedUpload
) -> Dataset:
    """Inspect the received file (refusing pickles and unknown or inconsistent files), store it, record it."""
    try:
        info = await asyncio.to_thread(inspect_dataset, upload.path, upload.filename, settings.max_upload_bytes * 4)
        dataset_id = new_id("ds")
        key = f"datasets/{dataset_id}/upload"
        await asyncio.to_thread(store.put_file, key, upload.path)
    finally:
        upload.discard()
    dataset = Dataset(
        id=dataset_id,
        tenant=tenant,
        filename=upload.filename,
        format=info.format,
        sha256=upload.sha256,
        size_bytes=upload.size_bytes,
        storage_key=key,
        arrays=info.arrays,
        samples=info.samples,
        has_labels=any(a["name"] == "labels" for a in info.arrays),
    )
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, tenant: str, dataset_id: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant == tenant))
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id!r}: list yours with GET /v1/datasets")
    return dataset


def list_datasets(session: Session, tenant: str, limit: int, cursor: str | None) -> tuple[list[Dataset], str | None]:
    query = select(Dataset).where(Dataset.tenant == tenant).order_by(Dataset.created_at.desc(), Dataset.id.desc())
    if cursor:
        anchor = get_dataset(session, tenant, cursor)
        query = query.where(
            (Dataset.created_at < anchor.created_at)
            | ((Dataset.created_at == anchor.created_at) & (Dataset.id < anchor.id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def delete_dataset(session: Session, store: Store, tenant: str, dataset_id: str) -> None:
    """Delete a dataset; refused while a queued or running job references it. Finished jobs keep its id
    and sha256 in their reports."""
    dataset = get_dataset(session, tenant, dataset_id)
    active = session.scalars(select(Job).where(Job.tenant == tenant, Job.status.in_(("queued", "running"))))
    user = next((job.id for job in active if dataset_id in {ref for _, ref in dataset_refs(job.spec)}), None)
    if user:
        raise Conflict(f"dataset {dataset_id!r} is in use by job {user!r}; cancel it or wait, then delete")
    session.delete(dataset)
    session.commit()
    store.delete(dataset.storage_key)


def summary(dataset: Dataset) -> dict[str, Any]:
    """The fields the fit check and the worker read."""
    return {
        "id": dataset.id,
        "format": dataset.format,
        "arrays": dataset.arrays,
        "samples": dataset.samples,
        "has_labels": dataset.has_labels,
        "sha256": dataset.sha256,
        "filename": dataset.filename,
    }


def resolve_references(session: Session, tenant: str, spec: dict[str, Any], model: Model) -> dict[str, dict[str, Any]]:
    """Check every `dataset_id` of a spec: it exists for this tenant and fits the model. Returns the
    summaries by id; 422 naming each offending field path."""
    found: dict[str, dict[str, Any]] = {}
    missing: list[dict[str, str]] = []
    mismatched: list[dict[str, str]] = []
    model_view = {"format": model.format, "inputs": model.inputs, "details": model.details}
    for field, dataset_id in dataset_refs(spec):
        if dataset_id not in found:
            row = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant == tenant))
            if row is None:
                message = (
                    f"no dataset {dataset_id!r}: upload one with POST /v1/datasets, or list yours with GET /v1/datasets"
                )
                missing.append({"field": field, "message": message})
                continue
            found[dataset_id] = summary(row)
        mismatched += [{"field": field, "message": problem} for problem in check_fit(found[dataset_id], model_view)]
    if missing:
        raise ValidationFailed("; ".join(f"{e['field']}: {e['message']}" for e in missing), errors=missing)
    if mismatched:
        raise DatasetMismatch("; ".join(f"{e['field']}: {e['message']}" for e in mismatched[:5]), errors=mismatched)
    return found
