"""/v1/models: upload (streamed), list, read, delete."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from app.db.models import Model
from app.schemas.common import Page
from app.schemas.models import ModelOut
from app.services import models as service
from app.services.uploads import declared_length, receive_upload

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_out(model: Model) -> ModelOut:
    return ModelOut.model_validate(model, from_attributes=True)


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    summary="Upload a model (multipart field `file`, or a raw octet-stream body with ?filename=)",
)
async def upload_model(
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    tenant: TenantDep,
    filename: str | None = None,
) -> ModelOut:
    upload = await receive_upload(
        request.stream(),
        request.headers.get("content-type", ""),
        settings.tmp_dir,
        settings.max_upload_bytes,
        filename,
        declared_length(request.headers.get("content-length")),
    )
    model = await service.create_model(session, store, settings, tenant, upload)
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model_out(model)


@router.get("", response_model=Page[ModelOut])
def list_models(
    session: SessionDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None
) -> Page[ModelOut]:
    rows, next_cursor = service.list_models(session, tenant, limit, cursor)
    return Page[ModelOut](items=[model_out(m) for m in rows], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut)
def read_model(model_id: str, session: SessionDep, tenant: TenantDep) -> ModelOut:
    return model_out(service.get_model(session, tenant, model_id))


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: str, session: SessionDep, store: StoreDep, tenant: TenantDep) -> Response:
    service.delete_model(session, store, tenant, model_id)
    return Response(status_code=204)
