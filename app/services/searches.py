"""Searches: the parent of candidate jobs. Submitting one chooses the space (the client's, or one fitted to
the model), records the search and every candidate as a real queued job in one transaction, and publishes
them, so N workers run N candidates at once. A candidate equal to an earlier succeeded job is answered by the
result cache and costs nothing.

`advance()` moves a running search on; it is called when a candidate's attempt ends or reports a step (by
the worker), when the search is read (by the API) and by the workers' maintenance loop for overdue ones. It
is idempotent, and every write it makes is a conditional update, so concurrent callers cannot disagree:
- a candidate that can no longer meet the constraints (after a step, with no training step left, its
  accuracy drop or cosine already misses) is stopped early: `pruned`;
- past the budget's wall time, the candidates still queued or running are cancelled (`cut`) and the search
  ends with what finished;
- when every candidate has ended, the search ends: the front, and the chosen candidate (the best on the
  objective among those meeting every constraint), with a verdict that says why.
"""

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Job, Search, new_id, utcnow
from app.errors import Conflict, NotFound, ValidationFailed
from app.schemas.jobs import JobSpec
from app.schemas.searches import Candidate, CandidateOut, CandidateState, Point, SearchOut, SearchProgress, SearchSpec
from app.schemas.searches import Space as SpaceRecord
from app.services import pareto
from app.services.jobs import (
    TERMINAL,
    Publisher,
    build_job,
    publish_queued,
    reserve_active_slot,
    validated,
    validation_errors,
)
from app.services.models import get_model
from app.services.search_space import propose
from app.settings import Settings

PRUNED: Final = "pruned"
CUT: Final = "cut"
"""The two reasons a search stops a candidate, the first word of the job's `search_note`."""


def parse_search(raw: Any) -> SearchSpec:
    return validated(SearchSpec, raw, "search spec")


def choose_space(spec: SearchSpec, model_details: dict[str, Any]) -> SpaceRecord:
    """The client's space cut to the budget (labels made unique), or the proposed one."""
    if spec.space is None:
        candidates, notes = propose(spec, model_details)
        return SpaceRecord(candidates=candidates, notes=notes)
    chosen: list[Candidate] = []
    for given in spec.space[: spec.budget.max_candidates]:
        label = given.label or " + ".join(p.label() for p in given.passes)
        taken = {c.label for c in chosen}
        twins = (f"{label} #{n}" for n in range(2, 99))
        unique = label if label not in taken else next(t for t in twins if t not in taken)
        passes = [p.model_dump(mode="json") for p in given.passes]
        chosen.append(Candidate(label=unique, reason="given in the search's space", passes=passes))
    left = len(spec.space) - len(chosen)
    notes = [f"{left} candidate(s) of the space beyond the budget of {spec.budget.max_candidates}"] if left else []
    return SpaceRecord(candidates=chosen, notes=notes)


def candidate_spec(spec: SearchSpec, candidate: Candidate, index: int) -> JobSpec:
    """The job one candidate runs: its passes, with the search's evaluation, constraints and settings."""
    raw = {
        "model_id": spec.model_id,
        "passes": candidate.passes,
        "evaluate": spec.evaluate.model_dump(mode="json"),
        "input_shapes": spec.input_shapes,
        "constraints": spec.constraints.model_dump(mode="json") if spec.constraints else None,
        "device": spec.device,
        "seed": spec.seed,
        "cache": spec.cache,
    }
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        errors = validation_errors(exc, prefix=f"space.{index}.")
        raise ValidationFailed(f"candidate {candidate.label!r} is not a valid pipeline", errors=errors) from exc


def submit_search(session: Session, settings: Settings, publish: Publisher, tenant: str, raw: Any) -> Search:
    """Validate, record the search and its candidate jobs together, publish the queued ones."""
    spec = parse_search(raw)
    try:
        model = get_model(session, tenant, spec.model_id)
    except NotFound as exc:
        raise ValidationFailed(
            f"model_id: {exc.message}", errors=[{"field": "model_id", "message": exc.message}]
        ) from exc
    space = choose_space(spec, model.details or {})
    search = Search(
        id=new_id("srch"),
        tenant=tenant,
        model_id=model.id,
        spec=spec.model_dump(mode="json"),
        candidates=space.model_dump(mode="json"),
        status="running",
        cancel_requested=False,
        created_at=utcnow(),
    )
    search.deadline_at = search.created_at + timedelta(seconds=spec.budget.max_wall_s)
    jobs = [
        build_job(session, settings, tenant, candidate_spec(spec, c, i), search.id, c.label, f"space.{i}.")
        for i, c in enumerate(space.candidates)
    ]
    reserve_active_slot(session, settings, tenant, count=sum(j.status == "queued" for j in jobs))
    session.add(search)
    session.flush()  # the search row first: the candidates' foreign key points at it
    session.add_all(jobs)
    session.commit()
    publish_queued(session, publish, jobs)
    return advance(session, search.id)


def get_search(session: Session, tenant: str, search_id: str) -> Search:
    search = session.scalar(
        select(Search).where(Search.id == search_id, Search.tenant == tenant).execution_options(populate_existing=True)
    )
    if search is None:
        raise NotFound(f"no search {search_id!r}: list yours with GET /v1/searches")
    return search


def list_searches(session: Session, tenant: str, limit: int, cursor: str | None) -> tuple[list[Search], str | None]:
    query = select(Search).where(Search.tenant == tenant).order_by(Search.created_at.desc(), Search.id.desc())
    if cursor:
        anchor = get_search(session, tenant, cursor)
        query = query.where(
            (Search.created_at < anchor.created_at)
            | ((Search.created_at == anchor.created_at) & (Search.id < anchor.id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def candidates_of(session: Session, search_id: str) -> list[Job]:
    query = select(Job).where(Job.search_id == search_id).order_by(Job.created_at, Job.id)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def stop_candidate(session: Session, job: Job, note: str) -> None:
    """Cancel a candidate for the search (queued: at once; running: its worker kills the pipeline), noting
    why unless an earlier reason was noted first."""
    session.execute(update(Job).where(Job.id == job.id, Job.search_note.is_(None)).values(search_note=note))
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == "queued")
        .values(status="cancelled", error_code="cancelled", error_message=note, finished_at=utcnow(), current_pass=None)
    )
    session.execute(update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True))


def hopeless(spec: SearchSpec, job: Job) -> str | None:
    """Why a running candidate cannot meet the constraints any more, from the figures after its latest step;
    None while it can, or while a training step (fine-tuning, distillation) is still ahead to recover them."""
    interim, constraints = job.interim, spec.constraints
    if not interim or constraints is None:
        return None
    later = [s for s in (job.plan or {}).get("steps", []) if s["index"] > interim["step"]]
    if any(s["config"]["type"] == "distill" or s["config"].get("finetune") for s in later):
        return None
    cosine, accuracy, original = interim.get("cosine_mean"), interim.get("accuracy"), interim.get("original_accuracy")
    after = f"after step {interim['step']} ({interim['label']}) with no training step left"
    if constraints.min_cosine is not None and cosine is not None and cosine < constraints.min_cosine:
        return f"{PRUNED}: cosine {cosine:.4f} {after} is below min_cosine {constraints.min_cosine}"
    limit = constraints.max_accuracy_drop
    if limit is not None and accuracy is not None and original is not None and original - accuracy > limit:
        return f"{PRUNED}: accuracy drop {original - accuracy:.4f} {after} is above max_accuracy_drop {limit}"
    return None


def advance(session: Session, search_id: str) -> Search:
    """Stop hopeless candidates, cut at the deadline, end the search when its candidates have ended."""
    query = select(Search).where(Search.id == search_id).execution_options(populate_existing=True)
    row = session.scalars(query).one()
    if row.status != "running":
        return row
    spec = SearchSpec.model_validate(row.spec)
    jobs = candidates_of(session, row.id)
    overdue = utcnow() >= _aware(row.deadline_at)
    for job in jobs:
        if job.status in TERMINAL:
            continue
        note = (
            f"{CUT}: the budget's max_wall_s of {spec.budget.max_wall_s:g} s ran out"
            if overdue
            else hopeless(spec, job)
            if job.status == "running"
            else None
        )
        if note:
            stop_candidate(session, job, note)
    session.commit()
    jobs = candidates_of(session, row.id)
    if overdue or all(j.status in TERMINAL for j in jobs):
        finish(session, row, spec, jobs, "succeeded")
    return get_search(session, row.tenant, row.id)


def finish(session: Session, search: Search, spec: SearchSpec, jobs: list[Job], status: str) -> None:
    """End the search once (a conditional update): the chosen candidate and the verdict."""
    points = points_of(jobs)
    chosen = pareto.best(points, spec.objective)
    verdict = verdict_of(spec, jobs, points, chosen, status)
    session.execute(
        update(Search)
        .where(Search.id == search.id, Search.status == "running")
        .values(status=status, chosen_job_id=chosen.job_id if chosen else None, verdict=verdict, finished_at=utcnow())
    )
    session.commit()


def verdict_of(spec: SearchSpec, jobs: list[Job], points: list[Point], chosen: Point | None, status: str) -> str:
    ended = "cancelled" if status == "cancelled" else "ended"
    counted = f"{len(points)} of {len(jobs)} candidates finished"
    if chosen is not None:
        return (
            f"search {ended}; {counted}; chose {chosen.label!r} ({chosen.job_id}): the best on {spec.objective} "
            f"among the {sum(p.feasible for p in points)} that met every constraint (p50 {chosen.p50_ms:.4g} ms, "
            f"{chosen.size_bytes} bytes, {chosen.quality_metric} {chosen.quality:.4f})"
        )
    reasons = sorted({str(j.report["constraints"]["reason"]) for j in jobs if measured(j) and j.report})
    why = "; ".join(reasons[:3]) if reasons else "no candidate finished"
    return f"search {ended}; {counted}; none met every constraint, so none was chosen: {why}"


def measured(job: Job) -> bool:
    """A candidate with a result to judge: succeeded, or failed only because it missed a constraint (its report
    and artifact are kept, and it is a point of the search, infeasible)."""
    done = job.status == "succeeded" or (job.status == "failed" and job.error_code == "constraints_not_met")
    return done and job.report is not None


def points_of(jobs: list[Job]) -> list[Point]:
    found = [pareto.point_of(j.id, j.candidate or j.id, j.report) for j in jobs if measured(j) and j.report]
    return [p for p in found if p is not None]


def cancel_search(session: Session, tenant: str, search_id: str) -> Search:
    """Cancel the search and every candidate still going; what finished is kept."""
    search = get_search(session, tenant, search_id)
    if search.status != "running":
        raise Conflict(f"search {search_id!r} already ended as {search.status!r}; there is nothing to cancel")
    session.execute(update(Search).where(Search.id == search.id).values(cancel_requested=True))
    jobs = candidates_of(session, search.id)
    for job in jobs:
        if job.status not in TERMINAL:
            stop_candidate(session, job, "cancelled with its search")
    session.commit()
    finish(session, search, SearchSpec.model_validate(search.spec), candidates_of(session, search.id), "cancelled")
    return get_search(session, tenant, search_id)


def advance_overdue(session: Session) -> int:
    """Advance every running search past its deadline (the workers' maintenance loop); how many."""
    due = list(session.scalars(select(Search.id).where(Search.status == "running", Search.deadline_at < utcnow())))
    session.commit()
    for search_id in due:
        advance(session, search_id)
    return len(due)


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def state_of(job: Job) -> CandidateState:
    if job.status == "cancelled" or (job.search_note and job.status == "running"):
        kind = (job.search_note or "").split(":", 1)[0]
        return PRUNED if kind == PRUNED else CUT if kind == CUT else "cancelled"
    return job.status  # type: ignore[return-value]


def original_figures(jobs: list[Job]) -> tuple[float | None, float | None]:
    """The original's quality (top-1, or cosine 1.0 to itself) and p50, as a finished candidate measured it."""
    report = next((j.report for j in jobs if measured(j)), None)
    if report is None:
        return None, None
    top1 = ((report.get("accuracy") or {}).get("original") or {}).get("top1")
    latency = (report.get("original") or {}).get("latency") or []
    return (float(top1) if top1 is not None else 1.0), (float(latency[0]["p50_ms"]) if latency else None)


def quality_floor(spec: SearchSpec, original: float | None, front: list[Point]) -> float | None:
    """Where the constraint line is drawn, in the points' quality metric."""
    constraints = spec.constraints
    if constraints is None or not front:
        return None
    if front[0].quality_metric == "top1" and constraints.max_accuracy_drop is not None and original is not None:
        return original - constraints.max_accuracy_drop
    if front[0].quality_metric == "cosine":
        return constraints.min_cosine
    return None


def search_out(session: Session, search: Search) -> SearchOut:
    """The search as the API shows it: each candidate's state and point, the front, the best so far."""
    spec = SearchSpec.model_validate(search.spec)
    space = SpaceRecord.model_validate(search.candidates)
    jobs = {j.candidate: j for j in candidates_of(session, search.id)}
    points = {p.job_id: p for p in points_of(list(jobs.values()))}
    front = pareto.front(list(points.values()))
    on_front = {p.job_id for p in front}
    rows = []
    for candidate in space.candidates:
        job = jobs[candidate.label]
        rows.append(
            CandidateOut(
                label=candidate.label,
                reason=candidate.reason,
                job_id=job.id,
                state=state_of(job),
                note=job.search_note,
                reused_from=job.reused_from,
                point=points.get(job.id),
                on_front=job.id in on_front,
                report_url=f"/v1/jobs/{job.id}/report.html",
            )
        )
    states = [r.state for r in rows]
    progress = SearchProgress(
        total=len(rows),
        done=sum(s in ("succeeded", "failed") for s in states),
        running=sum(s == "running" for s in states),
        queued=sum(s == "queued" for s in states),
        pruned=states.count(PRUNED),
        cut=states.count(CUT),
    )
    original_quality, original_p50 = original_figures(list(jobs.values()))
    return SearchOut(
        original_quality=original_quality,
        original_p50_ms=original_p50,
        quality_floor=quality_floor(spec, original_quality, front),
        id=search.id,
        model_id=search.model_id,
        status=search.status,  # type: ignore[arg-type]
        objective=spec.objective,
        spec=search.spec,
        progress=progress,
        candidates=rows,
        notes=space.notes,
        front=front,
        best=pareto.best(list(points.values()), spec.objective),
        chosen_job_id=search.chosen_job_id,
        verdict=search.verdict,
        created_at=search.created_at,
        deadline_at=search.deadline_at,
        finished_at=search.finished_at,
        report_url=f"/v1/searches/{search.id}/report.html",
    )
