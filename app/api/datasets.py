"""/v1/datasets: upload (streamed), list, read, delete."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from app.db.models import Dataset
from app.schemas.common import Page
from app.schemas.datasets import DatasetOut
from app.services import datasets as service
from app.services.uploads import receive_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset, from_attributes=True)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload a dataset (multipart `file`): .npz or .safetensors of arrays named after "
    "the model's inputs, plus optional integer `labels`, or .txt lines for a model with "
    "a tokenizer",
)
async def upload_dataset(
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    tenant: TenantDep,
    filename: str | None = None,
) -> DatasetOut:
    length = request.headers.get("content-length")
    upload = await receive_upload(
        request.stream(),
        request.headers.get("content-type", ""),
        settings.tmp_dir,
        settings.max_upload_bytes,
        filename,
        int(length) if length else None,
    )
    dataset = await service.create_dataset(session, store, settings, tenant, upload)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return dataset_out(dataset)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None
) -> Page[DatasetOut]:
    rows, next_cursor = service.list_datasets(session, tenant, limit, cursor)
    return Page[DatasetOut](items=[dataset_out(d) for d in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetOut:
    return dataset_out(service.get_dataset(session, tenant, dataset_id))


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, store: StoreDep, tenant: TenantDep) -> Response:
    service.delete_dataset(session, store, tenant, dataset_id)
    return Response(status_code=204)
