"""Models: accept an upload (inspect, store, record), read, list, delete."""

import asyncio

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db.models import Artifact, Job, Model, new_id
from app.errors import Conflict, NotFound, UnsupportedModelFormat
from app.services.inspection import GraphLimits, ModelInfo, inspect_model
from app.services.isolation import isolation_state
from app.services.uploads import ReceivedUpload
from app.settings import Settings
from app.storage import Store
from app.storage.layout import original_cache_prefix


async def create_model(
    session: Session, store: Store, settings: Settings, tenant: str, upload: ReceivedUpload
) -> Model:
    """Inspect the received file (refusing unsafe or unknown formats), move it to the store, record it."""
    try:
        info = await inspect_upload(settings, upload)
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


async def inspect_upload(settings: Settings, upload: ReceivedUpload) -> ModelInfo:
    """inspect_model off the event loop, refused (422) past INSPECTION_TIMEOUT_S: a slow or hostile file
    delays only its own request. TorchScript is read only where the operator allowed it and jobs run isolated."""
    limits = GraphLimits(settings.max_graph_nodes, settings.max_tensor_bytes)
    allow_torchscript = settings.allow_torchscript_uploads and isolation_state(settings.job_isolation).active
    inspection = asyncio.to_thread(
        inspect_model, upload.path, upload.filename, settings.max_upload_bytes * 4, limits, allow_torchscript
    )
    try:
        return await asyncio.wait_for(inspection, timeout=settings.inspection_timeout_s)
    except TimeoutError as exc:
        raise UnsupportedModelFormat(
            f"{upload.filename!r} took longer than {settings.inspection_timeout_s:g} s to inspect "
            "(INSPECTION_TIMEOUT_S); upload a plain ONNX file"
        ) from exc


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
    """Delete a model with its finished jobs, their artifacts and (unless another of the tenant's models has the
    same bytes) the cached figures of the original; refused while a job on it is active."""
    model = get_model(session, tenant, model_id)
    active = session.scalar(select(Job.id).where(Job.model_id == model_id, Job.status.in_(("queued", "running"))))
    if active:
        raise Conflict(f"model {model_id!r} is in use by job {active!r}; cancel it or wait, then delete")
    jobs = list(session.scalars(select(Job).where(Job.model_id == model_id)))
    sha256 = model.sha256
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
    twin = session.scalar(select(Model.id).where(Model.tenant == tenant, Model.sha256 == sha256))
    if twin is None:  # the original's cached figures and outputs go with the tenant's last copy of these bytes
        for key in store.list_keys(original_cache_prefix(tenant, sha256)):
            store.delete(key)
