"""optimize: onnxruntime's offline graph optimization, saved as a new ONNX model."""

from typing import Literal

from pydantic import Field

from passes.base import PassConfig, Takes


class Optimize(PassConfig):
    type: Literal["optimize"]
    level: Literal["basic", "extended"] = Field(
        "extended", description="basic: constant folding and redundant-node removal; extended: + fusions"
    )

    def takes(self) -> Takes:
        return "onnx"


Config = Optimize
