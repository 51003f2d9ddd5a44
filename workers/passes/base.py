"""What a pass is: a config type, the representation it takes (ONNX or torch), and a run."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

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
    """what the pass measured about its own work (sparsity, ranks, losses): shown in its step of the report"""

    def path(self, name: str) -> Path:
        return self.workdir / f"step{self.step:02d}-{name}"


class Pass:
    type: ClassVar[str]
    takes: ClassVar[Literal["onnx", "torch", "any"]]
    converts: ClassVar[bool] = False
    """a conversion: its outputs must match the original (fidelity checked against a threshold)"""

    def __init__(self, config: Any) -> None:
        self.config = config

    def form(self) -> Literal["onnx", "torch", "any"]:
        """The representation this configured pass needs; most passes need one form whatever the config."""
        return self.takes

    def run(self, handle: Any, ctx: PassContext) -> Any:
        raise NotImplementedError
