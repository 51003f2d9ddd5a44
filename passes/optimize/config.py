"""optimize: onnxruntime's offline graph optimization, saved as a new ONNX model."""

from typing import Literal

from pydantic import Field

from passes.base import FidelityFloors, PassConfig, Takes


class Optimize(PassConfig):
    type: Literal["optimize"]
    level: Literal["basic", "extended"] = Field(
        "extended", description="basic: constant folding and redundant-node removal; extended: + fusions"
    )

    def takes(self) -> Takes:
        return "onnx"

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return None  # a graph rewrite keeps the outputs: it sets no floor of its own


Config = Optimize
