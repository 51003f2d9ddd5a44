"""/v1/jobs/{id}/report (JSON, its schema in the OpenAPI), report.html (one self-contained page with
charts) and compare (two jobs' results side by side, JSON or HTML)."""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from app.api.deps import SessionDep, TenantDep
from app.schemas.reports import Comparison, Report
from app.services import report_page
from app.services import reports as service

router = APIRouter(prefix="/v1/jobs", tags=["reports"])
OtherJob = Annotated[str, Query(alias="with", description="the job to compare with, e.g. job_...")]


@router.get("/{job_id}/report", response_model=Report)
def read_report(job_id: str, session: SessionDep, tenant: TenantDep) -> Report:
    """What the job measured; 409 not_ready until it has succeeded."""
    return service.get_report(session, tenant, job_id)


@router.get("/{job_id}/report.html", response_class=HTMLResponse)
def read_report_page(job_id: str, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    """The report as one HTML page that opens offline: summary, charts, latency, steps, reproducibility."""
    return HTMLResponse(report_page.render_report(service.get_report(session, tenant, job_id)))


@router.get("/{job_id}/compare", response_model=Comparison)
def compare_jobs(job_id: str, other: OtherJob, session: SessionDep, tenant: TenantDep) -> Comparison:
    """This job's result beside another's: size, latency, fidelity, accuracy, verdict."""
    return service.compare(session, tenant, job_id, other)[0]


@router.get("/{job_id}/compare.html", response_class=HTMLResponse)
def compare_jobs_page(job_id: str, other: OtherJob, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    return HTMLResponse(report_page.render_comparison(*service.compare(session, tenant, job_id, other)))
