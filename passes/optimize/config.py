"""optimize: onnxruntime's offline graph optimization, saved as a new ONNX model; transformer encoders get
onnxruntime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu) first."""

from typing import Literal

from pydantic import Field

from passes.base import FidelityFloors, PassConfig, Takes


class Optimize(PassConfig):
    type: Literal["optimize"]
    level: Literal["basic", "extended"] = Field(
        "extended", description="basic: constant folding and redundant-node removal; extended: + fusions"
    )
    transformer_fusions: Literal["auto", "off"] = Field(
        "auto",
        description="auto: a BERT-like encoder gets onnxruntime's transformer optimizer (Attention, "
        "SkipLayerNormalization, BiasGelu fusions; the fused ops stay quantizable), kept only when its outputs "
        "match; the step's metrics name the fusions. off: onnxruntime's offline optimization only",
    )

    def takes(self) -> Takes:
        return "onnx"

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return None  # a graph rewrite keeps the outputs: it sets no floor of its own


Config = Optimize
