"""The job spec clients submit, and the job as the API shows it."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, PositiveInt, field_validator

from app.schemas.errors import JobErrorCode
from passes.planner import Plan
from passes.registry import AnyPassConfig

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class LatencySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_sizes: list[PositiveInt] | None = Field(
        None, max_length=8, description="batch sizes to time; default: the batch of input_shapes"
    )
    runs: int = Field(50, ge=1, le=10_000)
    warmup: int = Field(5, ge=0, le=1_000)


class GenerationSpec(BaseModel):
    """How a causal LM's generation is measured and shown (other models ignore it)."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[str] | None = Field(
        None,
        max_length=16,
        description="prompts for the greedy samples; default: the first 8 tokens of the first 8 evaluation documents",
    )
    new_tokens: int = Field(20, ge=1, le=512, description="greedy tokens per sample and per speed round")
    prompt_length: int = Field(32, ge=1, le=8192, description="prompt tokens for time to first token")
    batch_size: int = Field(1, ge=1, le=256, description="prompts generated together for tokens/s")


class EvaluateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="evaluation samples: made from the input "
        "signature (default 32), or the first ones of the dataset (default: all)",
    )
    dataset_id: str | None = Field(
        None,
        description="evaluate original and every step on this dataset "
        "instead of generated inputs; with `labels`, top-1 accuracy and its drop",
    )
    output: str | None = Field(
        None, description="the output accuracy reads (argmax of its last axis); default: the first"
    )
    latency: LatencySpec = Field(default_factory=LatencySpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    min_conversion_cosine: float = Field(
        0.99, ge=0, le=1, description="a conversion whose outputs fall below this cosine fails the job"
    )


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="result's mean cosine to the original")
    min_size_ratio: float | None = Field(None, gt=0, description="original size / result size")
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="original top-1 minus result top-1 on the labelled evaluation set, "
        "e.g. 0.01 for one point; needs evaluate.dataset_id with labels",
    )
    max_latency_ms: float | None = Field(
        None, gt=0, description="the result's p50 latency at the first evaluate.latency batch size, in ms"
    )


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl = Field(
        description="called with a signed POST (Standard Webhooks) when the job ends; http(s) to a public address only"
    )


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    passes: list[AnyPassConfig] = Field(min_length=1, max_length=20)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    input_shapes: dict[str, list[PositiveInt]] | None = Field(
        None, description="fixes the model's dynamic dimensions for evaluation, e.g. {'x': [1, 3, 48, 192]}"
    )
    constraints: Constraints | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = Field(0, ge=0, description="seeds the evaluation inputs, so a report can be reproduced")
    webhook: WebhookSpec | None = None
    cache: bool = Field(
        True,
        description="return the result of an earlier succeeded job of this tenant with the same model, datasets "
        "(by sha256) and spec at once, without running; false runs it again (a job with a webhook always runs)",
    )

    @field_validator("input_shapes")
    @classmethod
    def _non_empty_shapes(cls, value: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
        if value is not None:
            for name, shape in value.items():
                if not shape:
                    raise ValueError(f"input_shapes[{name!r}] is empty: give every dimension, e.g. [1, 128]")
        return value


class JobError(BaseModel):
    code: JobErrorCode
    message: str = Field(description="what went wrong and what to do next")


class JobOut(BaseModel):
    id: str
    model_id: str
    status: JobStatus
    progress: float = Field(description="0 to 1")
    current_pass: str | None
    attempts: int
    queue: str
    spec: dict[str, Any]
    plan: Plan | None = Field(
        description="the steps the worker runs, conversions included, as planned at submit (null for a job "
        "submitted before plans were stored)"
    )
    error: JobError | None
    verdict: Literal["pass", "warn", "fail"] | None = Field(
        None,
        description="the report's verdict once the result is measured: a `fail` ends the job `failed` with "
        "`constraints_not_met` (report and artifact kept); null before, or when no result was made",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None = Field(None, description="finished_at - started_at")
    reused_from: str | None = Field(
        None, description="the earlier job whose result (report and artifacts) this job returned from the cache"
    )
    search_id: str | None = Field(None, description="the search this job is a candidate of")
    candidate: str | None = Field(None, description="its label in that search")


class ArtifactOut(BaseModel):
    id: str
    job_id: str
    kind: Literal["model", "report"]
    name: str
    format: str
    media_type: str
    sha256: str
    size_bytes: int
    created_at: datetime
    download_url: str
