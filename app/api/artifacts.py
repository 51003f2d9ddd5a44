"""Artifacts: a job's list, and downloads with sha256, ETag and byte ranges, streamed through the API or,
with PRESIGNED_DOWNLOADS on an S3 store, a 307 to a short-lived presigned URL (S3 serves the ranges)."""

import re

from fastapi import APIRouter, Header, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from app.api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from app.db.models import Artifact
from app.errors import SqueezeError
from app.schemas.jobs import ArtifactOut
from app.services import jobs as service

router = APIRouter(tags=["artifacts"])


class RangeNotSatisfiable(SqueezeError):
    status, code, title = 416, "range_not_satisfiable", "The requested byte range is outside the artifact"


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(
        id=artifact.id,
        job_id=artifact.job_id,
        kind=artifact.kind,  # type: ignore[arg-type]
        name=artifact.name,
        format=artifact.format,
        media_type=artifact.media_type,
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
        created_at=artifact.created_at,
        download_url=f"/v1/artifacts/{artifact.id}/content",
    )


@router.get("/v1/jobs/{job_id}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(job_id: str, session: SessionDep, tenant: TenantDep) -> list[ArtifactOut]:
    return [artifact_out(a) for a in service.list_artifacts(session, tenant, job_id)]


@router.get("/v1/artifacts/{artifact_id}", response_model=ArtifactOut)
def read_artifact(artifact_id: str, session: SessionDep, tenant: TenantDep) -> ArtifactOut:
    return artifact_out(service.get_artifact(session, tenant, artifact_id))


def _parse_range(header: str, size: int) -> tuple[int, int]:
    match = re.fullmatch(r"bytes=(\d{0,19})-(\d{0,19})", header.strip())  # 19 digits pass any file size
    if not match or match.groups() == ("", ""):
        raise RangeNotSatisfiable(f"unsupported Range {header[:60]!r}: use one range, e.g. bytes=0-1023")
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"Range {header[:60]!r} is outside the artifact's {size} bytes")
    return start, end


@router.get(
    "/v1/artifacts/{artifact_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "a byte range"},
        307: {"description": "PRESIGNED_DOWNLOADS: fetch the artifact from the presigned URL in Location"},
    },
)
def download_artifact(
    artifact_id: str,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    tenant: TenantDep,
    range_header: str | None = Header(None, alias="range"),
    if_none_match: str | None = Header(None),
) -> Response:
    artifact = service.get_artifact(session, tenant, artifact_id)
    etag = f'"{artifact.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "X-Checksum-SHA256": artifact.sha256,
        "Content-Disposition": f'attachment; filename="{artifact.name}"',
    }
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    if settings.presigned_downloads:
        url = store.presigned_url(artifact.storage_key, settings.presigned_ttl_s, artifact.name, artifact.media_type)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"X-Checksum-SHA256": artifact.sha256, "ETag": etag})
    size = artifact.size_bytes
    if range_header:
        start, end = _parse_range(range_header, size)
        headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)})
        return StreamingResponse(
            store.iter_bytes(artifact.storage_key, start, end),
            status_code=206,
            media_type=artifact.media_type,
            headers=headers,
        )
    headers["Content-Length"] = str(size)
    return StreamingResponse(store.iter_bytes(artifact.storage_key), media_type=artifact.media_type, headers=headers)
