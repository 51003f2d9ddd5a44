"""The search a client submits (a model, datasets, an objective, constraints, a budget and optionally its own
space of candidate pipelines) and the search as the API shows it: progress, the Pareto front, the choice."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from app.schemas.jobs import Constraints, EvaluateSpec
from passes.registry import AnyPassConfig

SearchStatus = Literal["running", "succeeded", "cancelled"]
Objective = Literal["latency", "size", "accuracy"]
CandidateState = Literal["queued", "running", "succeeded", "failed", "pruned", "cut", "cancelled"]


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_candidates: int = Field(8, ge=1, le=32, description="candidates queued at most")
    max_wall_s: float = Field(
        3600, gt=0, le=7 * 24 * 3600, description="after this many seconds the candidates still going are cancelled"
    )


class CandidateSpec(BaseModel):
    """One pipeline of an explicit space."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, max_length=128, description="its name in the search; default: its passes")
    passes: list[AnyPassConfig] = Field(min_length=1, max_length=20)


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    objective: Objective = Field(
        "latency",
        description="what the chosen candidate is best at among those meeting every constraint: latency (p50 at "
        "the first evaluate.latency batch size), size (bytes) or accuracy (top-1 with labels, else cosine)",
    )
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    constraints: Constraints | None = None
    calibration_dataset_id: str | None = Field(
        None, description="model inputs for static int8 calibration; without it the space has no static candidates"
    )
    train_dataset_id: str | None = Field(
        None,
        description="training inputs (with `labels` when the task has them) for fine-tuning after pruning and "
        "low-rank factorization, and for distillation; without it the space has no PyTorch-side candidates",
    )
    space: list[CandidateSpec] | None = Field(
        None, min_length=1, max_length=32, description="the candidates to run; default: a space fitted to the model"
    )
    budget: Budget = Field(default_factory=Budget)
    input_shapes: dict[str, list[PositiveInt]] | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = Field(0, ge=0)
    cache: bool = Field(True, description="candidates equal to an earlier succeeded job reuse its result at once")


class Candidate(BaseModel):
    """A candidate as chosen at submit, stored with the search."""

    label: str
    reason: str = Field(description="why it is in the space")
    passes: list[dict[str, Any]]


class Space(BaseModel):
    candidates: list[Candidate]
    notes: list[str] = Field(default_factory=list, description="what the proposal left out, and why")


class Point(BaseModel):
    """A finished candidate in objective space."""

    job_id: str
    label: str
    quality: float = Field(description="top-1 accuracy with labels, else mean cosine to the original")
    quality_metric: Literal["top1", "cosine"]
    p50_ms: float = Field(description="result p50 latency at the first batch size")
    size_bytes: int
    feasible: bool = Field(description="met every constraint and the fidelity floor")


class CandidateOut(BaseModel):
    label: str
    reason: str
    job_id: str
    state: CandidateState
    note: str | None = Field(None, description="why the search stopped it, when it did")
    reused_from: str | None = Field(None, description="the job whose cached result it returned")
    point: Point | None = None
    on_front: bool = False
    report_url: str


class SearchProgress(BaseModel):
    total: int
    done: int = Field(description="succeeded or failed")
    running: int
    queued: int
    pruned: int = Field(description="stopped early: they could not meet the constraints")
    cut: int = Field(description="cancelled when the budget ran out")


class SearchOut(BaseModel):
    id: str
    model_id: str
    status: SearchStatus
    objective: Objective
    spec: dict[str, Any]
    progress: SearchProgress
    candidates: list[CandidateOut]
    notes: list[str] = Field(description="what the proposed space left out, and why")
    front: list[Point] = Field(description="the non-dominated finished candidates (quality up, latency and size down)")
    best: Point | None = Field(description="the best on the objective among the feasible finished candidates so far")
    original_quality: float | None = Field(
        None, description="the original's top-1 (or cosine 1.0), from the finished candidates' reports"
    )
    original_p50_ms: float | None = Field(None, description="the original's p50 at the first batch size")
    quality_floor: float | None = Field(
        None, description="the lowest quality meeting the constraints: original top-1 - max_accuracy_drop or min_cosine"
    )
    chosen_job_id: str | None = Field(description="set when the search has ended: `best` at that moment")
    verdict: str | None = Field(description="when ended: what was chosen and why, or why nothing was")
    created_at: datetime
    deadline_at: datetime
    finished_at: datetime | None
    report_url: str
