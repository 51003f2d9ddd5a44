"""Reports: read a job's report as its schema, and put two jobs' results side by side."""

from typing import Any

from sqlalchemy.orm import Session

from app.errors import NotReady
from app.schemas.reports import Comparison, JobSummary, Report
from app.services.jobs import get_job


def get_report(session: Session, tenant: str, job_id: str) -> Report:
    job = get_job(session, tenant, job_id)
    if job.report is None:
        raise NotReady(f"job {job_id!r} is {job.status!r} and has no report yet; poll GET /v1/jobs/{job_id}")
    # The worker validated this report against the same schema before storing it.
    return Report.model_validate({"job_id": job.id, **job.report})


def headline(report: Report) -> dict[str, Any]:
    """The figures a person compares first: the result's accuracy (or cosine), p50 at the first batch size."""
    accuracy = (
        report.accuracy.result.get("top1")
        if report.accuracy and report.accuracy.task == "classification"
        else report.result.accuracy
    )
    drop = (
        report.accuracy.drop
        if report.accuracy and report.accuracy.task == "classification"
        else report.result.accuracy_drop
    )
    first = report.result.latency[0] if report.result.latency else None
    original_first = next(
        (r for r in report.original.latency if first and r.batch_size == first.batch_size and r.device == first.device),
        None,
    )
    return {
        "accuracy": accuracy,
        "accuracy_drop": drop,
        "p50_ms": first.p50_ms if first else None,
        "original_p50_ms": original_first.p50_ms if original_first else None,
    }


def summary(report: Report) -> JobSummary:
    top = headline(report)
    return JobSummary(
        job_id=report.job_id or "",
        model_id=report.model_id,
        passes=[p.get("type", "?") for p in report.spec.get("passes", [])],
        device=report.spec.get("device", "cpu"),
        verdict=report.constraints.verdict,
        size_bytes=report.result.size_bytes,
        size_ratio=report.result.size_ratio,
        p50_ms=top["p50_ms"],
        original_p50_ms=top["original_p50_ms"],
        cosine_mean=report.result.fidelity.cosine_mean,
        accuracy=top["accuracy"],
        accuracy_drop=top["accuracy_drop"],
    )


def compare(session: Session, tenant: str, job_id: str, other_id: str) -> tuple[Comparison, Report, Report]:
    """Two jobs' results side by side, with the reports they come from."""
    base, other = get_report(session, tenant, job_id), get_report(session, tenant, other_id)
    a, b = summary(base), summary(other)
    return (
        Comparison(
            base=a,
            other=b,
            same_model=base.model_id == other.model_id,
            same_machine=(base.machine.cpu, base.machine.gpu) == (other.machine.cpu, other.machine.gpu),
            latency_ratio=a.p50_ms / b.p50_ms if a.p50_ms and b.p50_ms else None,
            size_ratio=a.size_bytes / b.size_bytes if a.size_bytes and b.size_bytes else None,
        ),
        base,
        other,
    )
