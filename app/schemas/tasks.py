"""What crosses a process boundary inside the service, defined once and validated on both sides: the broker
message (API or sweep -> worker), the task the worker hands its sandboxed child (task.json), the child's
progress lines and its result (result.json). The report the child builds is app.schemas.reports.Report."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import TensorInfo
from app.schemas.datasets import DatasetFormat
from app.schemas.errors import JobErrorCode
from app.schemas.jobs import JobError, JobSpec
from app.schemas.models import ModelFormat
from app.schemas.reports import Report
from passes.base import ArtifactFormat, FidelityFloors
from passes.planner import Plan


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunJob(_Contract):
    """The broker message: only the id; the database holds the job."""

    job_id: str


class ModelRecord(_Contract):
    """The uploaded model as the child needs it (it has no database access)."""

    id: str
    format: ModelFormat
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    details: dict[str, Any]
    size_bytes: int
    sha256: str
    param_count: int | None

    def signature(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Inputs and outputs in the JSON form the database stores, which the shape helpers read."""
        return [i.model_dump() for i in self.inputs], [o.model_dump() for o in self.outputs]


class DatasetRecord(_Contract):
    """A dataset the spec names, copied into the child's folder at `path`."""

    id: str
    format: DatasetFormat
    arrays: list[TensorInfo]
    samples: int
    has_labels: bool
    sha256: str
    filename: str
    path: str = Field(description="relative to the child's working folder")


class ChildTask(_Contract):
    """task.json: everything the child runs the job from."""

    spec: JobSpec
    plan: Plan
    model: ModelRecord
    datasets: dict[str, DatasetRecord]
    threads: int = Field(ge=1)
    max_unpacked_bytes: int = Field(ge=1)
    floors: FidelityFloors
    prestarted: bool = Field(False, description="the child was started before this job arrived")

    def fidelity_floor(self) -> float:
        """The floor of the result: the spec's `constraints.min_cosine`, else the lowest floor of the passes
        planned (fp16 0.99, int8 0.98 by default), else the generic one."""
        if self.spec.constraints is not None and self.spec.constraints.min_cosine is not None:
            return self.spec.constraints.min_cosine
        given = [f for s in self.plan.steps if (f := s.config.fidelity_floor(self.floors)) is not None]
        return min(given, default=self.floors.generic)


class Interim(_Contract):
    """Figures after a finished step, against the original on the evaluation inputs: a search reads them to
    stop a candidate that can no longer meet its constraints."""

    step: int = Field(description="the plan index of the step just finished")
    label: str
    cosine_mean: float | None
    accuracy: float | None = Field(description="top-1 after the step, when the evaluation set has labels")
    original_accuracy: float | None


class Progress(_Contract):
    """One line the child prints on stdout while it works."""

    progress: float = Field(ge=0, le=1)
    current: str = Field(description="the step running now, e.g. `quantize static`")
    interim: Interim | None = Field(None, description="set on the line that ends a step")


class ArtifactFile(_Contract):
    path: str = Field(description="relative to the child's working folder")
    name: str
    kind: Literal["model"]
    format: ArtifactFormat | Literal["aoti"]


class ChildSucceeded(_Contract):
    ok: Literal[True] = True
    artifacts: list[ArtifactFile]
    report: Report


class ChildFailed(_Contract):
    ok: Literal[False] = False
    error: JobError

    @classmethod
    def of(cls, code: JobErrorCode, message: str) -> "ChildFailed":
        return cls(error=JobError(code=code, message=message))


ChildResult = ChildSucceeded | ChildFailed
"""result.json"""
