"""Reports: read a job's report as its schema, and put two jobs' results side by side."""

from typing import Any

from sqlalchemy.orm import Session

from app.errors import NotReady
from app.schemas.reports import Comparison, JobSummary, LatencyComparison, PairedLatency, Report
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


def headline_speedup(report: Report) -> LatencyComparison | None:
    """The result's like-for-like speedup over its original at the first batch size timed."""
    return next((c for c in report.result.latency_comparison if c.headline), None)


def summary(report: Report) -> JobSummary:
    top = headline(report)
    speedup = headline_speedup(report)
    return JobSummary(
        job_id=report.job_id or "",
        model_id=report.model_id,
        passes=[p.get("type", "?") for p in report.spec.get("passes", [])],
        device=report.spec.get("device", "cpu"),
        verdict=report.constraints.verdict,
        warnings=report.constraints.warnings,
        speedup=speedup.speedup if speedup else None,
        speedup_reading=speedup.reading if speedup else None,
        size_bytes=report.result.size_bytes,
        size_ratio=report.result.size_ratio,
        p50_ms=top["p50_ms"],
        original_p50_ms=top["original_p50_ms"],
        cosine_mean=report.result.fidelity.cosine_mean,
        accuracy=top["accuracy"],
        accuracy_drop=top["accuracy_drop"],
    )


def paired_latency(base: Report, other: Report) -> tuple[list[PairedLatency], list[str]]:
    """The two results' p50 at every (batch size, device) both measured, and what only one of them did."""
    theirs = {(r.batch_size, r.device): r for r in other.result.latency}
    ours = {(r.batch_size, r.device): r for r in base.result.latency}
    pairs = [
        PairedLatency(
            batch_size=b,
            device=d,
            base_p50_ms=r.p50_ms,
            other_p50_ms=theirs[b, d].p50_ms,
            ratio=r.p50_ms / theirs[b, d].p50_ms,
        )
        for (b, d), r in ours.items()
        if (b, d) in theirs and theirs[b, d].p50_ms > 0
    ]
    notes = [
        f"only {who} timed batch {b} on {d}"
        for who, mine, yours in (("the base job", ours, theirs), ("the other job", theirs, ours))
        for (b, d) in mine
        if (b, d) not in yours
    ]
    runtimes = {report.result.latency[0].runtime for report in (base, other) if report.result.latency}
    if len(runtimes) > 1:
        notes.append(f"the results ran on different runtimes ({', '.join(sorted(runtimes))})")
    if not pairs:
        notes.append("the two jobs share no batch size and device: their latencies cannot be compared")
    return pairs, notes


def compare(session: Session, tenant: str, job_id: str, other_id: str) -> tuple[Comparison, Report, Report]:
    """Two jobs' results side by side, with the reports they come from; latency paired by batch and device."""
    base, other = get_report(session, tenant, job_id), get_report(session, tenant, other_id)
    a, b = summary(base), summary(other)
    pairs, notes = paired_latency(base, other)
    same_machine = (base.machine.cpu, base.machine.gpu) == (other.machine.cpu, other.machine.gpu)
    if not same_machine:
        notes.append("measured on different machines: latencies differ for that reason too")
    if base.model_id != other.model_id:
        notes.append("different original models")
    return (
        Comparison(
            base=a,
            other=b,
            same_model=base.model_id == other.model_id,
            same_machine=same_machine,
            latency=pairs,
            latency_ratio=pairs[0].ratio if pairs else None,
            notes=notes,
            size_ratio=a.size_bytes / b.size_bytes if a.size_bytes and b.size_bytes else None,
        ),
        base,
        other,
    )
