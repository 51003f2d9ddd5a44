"""What a pass's run gets beside its config and the model: where to write, the job's device, an example
batch, the datasets the spec names, and the job's original model."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passes.base import FidelityFloors
from workers.evaluation.inputs import Feeds


@dataclass
class PassContext:
    workdir: Path
    step: int
    device: str
    example: Feeds
    """one evaluation batch, for passes that trace or export the model"""
    datasets: dict[str, Feeds] = field(default_factory=dict)
    """every dataset the spec references (any `dataset_id` field), loaded by the pipeline: arrays by
    input name, plus `labels` when the dataset has them"""
    original: Any = None
    """the job's original model (a ModelHandle), kept through the pipeline: the teacher of distillation"""
    metrics: dict[str, Any] = field(default_factory=dict)
    """what the pass measured about its own work (ranks, losses, zero weights): shown in its step of the
    report under names no shared figure uses"""

    evaluation: list[Feeds] = field(default_factory=list)
    """the job's evaluation batches, which the report measures the result on"""
    floors: FidelityFloors | None = None
    """the settings' fidelity floors (None outside a job: nothing to hold the result to)"""
    min_cosine: float | None = None
    """the spec's constraints.min_cosine, which replaces the floors"""
    sensitivity: dict[str, Any] | None = None
    """the nodes a quantization kept in float to reach its floor, with every attempt (the step's report)"""

    def path(self, name: str) -> Path:
        return self.workdir / f"step{self.step:02d}-{name}"
