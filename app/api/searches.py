"""/v1/searches: submit a search (202 + Location), read it (live progress, front, best so far), list, cancel,
and its report page (a Pareto scatter linking every candidate to its job's report)."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from app.api.deps import PublisherDep, SessionDep, SettingsDep, TenantDep
from app.api.jobs import _parse_json
from app.schemas.common import Page
from app.schemas.searches import SearchOut, SearchSpec
from app.services import search_page
from app.services import searches as service
from app.services.uploads import MAX_FIELD_BYTES, declared_length, read_small_body

router = APIRouter(prefix="/v1/searches", tags=["searches"])


@router.post(
    "",
    status_code=202,
    response_model=SearchOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": SearchSpec.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            }
        }
    },
)
async def submit_search(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    publish: PublisherDep,
    tenant: TenantDep,
) -> SearchOut:
    """Queue a search: every candidate is a job on the queue. 202 with Location."""
    length = declared_length(request.headers.get("content-length"))
    body = await read_small_body(request.stream(), length, MAX_FIELD_BYTES)
    raw = _parse_json(body.decode("utf-8", "replace"), "request body", "search spec", "model_id")
    search = await asyncio.to_thread(service.submit_search, session, settings, publish, tenant, raw)
    response.headers["Location"] = f"/v1/searches/{search.id}"
    return service.search_out(session, search)


@router.get("", response_model=Page[SearchOut])
def list_searches(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[SearchOut]:
    rows, next_cursor = service.list_searches(session, tenant, limit, cursor)
    return Page[SearchOut](items=[service.search_out(session, s) for s in rows], next_cursor=next_cursor)


@router.get("/{search_id}", response_model=SearchOut)
def read_search(search_id: str, session: SessionDep, tenant: TenantDep) -> SearchOut:
    """Moves the search on first (stops hopeless candidates, cuts at the deadline, ends it when all ended)."""
    service.get_search(session, tenant, search_id)
    return service.search_out(session, service.advance(session, search_id))


@router.post("/{search_id}/cancel", response_model=SearchOut)
def cancel_search(search_id: str, session: SessionDep, tenant: TenantDep) -> SearchOut:
    """Cancel the search and its candidates still going; finished candidates are kept."""
    return service.search_out(session, service.cancel_search(session, tenant, search_id))


@router.get("/{search_id}/report.html", response_class=HTMLResponse)
def read_search_page(search_id: str, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    """The search as one HTML page: the Pareto scatter (front highlighted, the constraint drawn), the table."""
    service.get_search(session, tenant, search_id)
    return HTMLResponse(search_page.render_search(service.search_out(session, service.advance(session, search_id))))
