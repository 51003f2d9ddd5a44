"""Models: accept an upload (inspect, store, record), read, list, delete."""

import asyncio

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db.models import Artifact, Job, Model, new_id
from app.errors import Conflict, NotFound
from app.services.inspection import GraphLimits, inspect_model
from app.services.uploads import ReceivedUpload
from app.settings import Settings
from app.storage import Store


async def create_model(
    session: Session, store: Store, settings: Settings, tenant: str, upload: ReceivedUpload
) -> Model:
    """Inspect the received file (refusing unsafe or unknown formats), move it to the store, record it."""
    try:
        limits = GraphLimits(settings.max_graph_nodes, settings.max_tensor_bytes)
        info = await asyncio.to_thread(
            inspect_model, upload.path, upload.filename, settings.max_upload_bytes * 4, limits
        )
        model_id = new_id("mdl")
        key = f"models/{model_id}/upload"
        await asyncio.to_thread(store.put_file, key, upload.path)
    finally:
        upload.discard()
    model = Model(
        id=model_id,
        tenant=tenant,
        filename=upload.filename,
        format=info.format,
        sha256=upload.sha256,
        size_bytes=upload.size_bytes,
        storage_key=key,
        inputs=info.inputs,
        outputs=info.outputs,
        param_count=info.param_count,
        details=info.details,
    )
    session.add(model)
    session.commit()
    return model


def get_model(session: Session, tenant: str, model_id: str) -> Model:
    model = session.scalar(select(Model).where(Model.id == model_id, Model.tenant == tenant))
    if model is None:
        raise NotFound(f"no model {model_id!r}: list yours with GET /v1/models")
    return model


def list_models(session: Session, tenant: str, limit: int, cursor: str | None) -> tuple[list[Model], str | None]:
    query = select(Model).where(Model.tenant == tenant).order_by(Model.created_at.desc(), Model.id.desc())
    if cursor:
        anchor = get_model(session, tenant, cursor)
        query = query.where(
            (Model.created_at < anchor.created_at) | ((Model.created_at == anchor.created_at) & (Model.id < anchor.id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def delete_model(session: Session, store: Store, tenant: str, model_id: str) -> None:
    """Delete a model with its finished jobs and their artifacts; refused while a job on it is active."""
    model = get_model(session, tenant, model_id)
    active = session.scalar(select(Job.id).where(Job.model_id == model_id, Job.status.in_(("queued", "running"))))
    if active:
        raise Conflict(f"model {model_id!r} is in use by job {active!r}; cancel it or wait, then delete")
    jobs = list(session.scalars(select(Job).where(Job.model_id == model_id)))
    keys = [model.storage_key] + [
        a.storage_key for job in jobs for a in session.scalars(select(Artifact).where(Artifact.job_id == job.id))
    ]
    for job in jobs:
        session.execute(delete(Artifact).where(Artifact.job_id == job.id))
        session.delete(job)
    session.delete(model)
    session.commit()
    for key in keys:
        store.delete(key)
