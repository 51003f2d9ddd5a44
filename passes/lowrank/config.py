"""lowrank: replace weight matrices by products of thin ones. A layer whose factors would not be smaller
is left alone."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from passes.base import PassConfig
from passes.finetune import FinetuneConfig


class _LowRank(PassConfig):
    type: Literal["lowrank"]
    finetune: FinetuneConfig | None = Field(None, description="train the factorized model afterwards")


class Svd(_LowRank):
    """Linear layers from their truncated SVD: keep `rank_ratio` of the full rank, or the smallest rank
    keeping `energy` of the squared singular values (exactly one of the two)."""

    method: Literal["svd"]
    rank_ratio: float | None = Field(None, gt=0, lt=1, description="rank kept, as a share of the full rank")
    energy: float | None = Field(None, gt=0, lt=1, description="share of squared singular values kept")

    @model_validator(mode="after")
    def _one_rank_rule(self) -> "Svd":
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("give exactly one of rank_ratio or energy")
        return self


class Tucker(_LowRank):
    """Conv2d layers by Tucker-2 on the channel modes (tensorly): 1x1 in, the k x k core, 1x1 out."""

    method: Literal["tucker"]
    rank_ratio: float = Field(gt=0, lt=1, description="channel ranks kept, as a share of the channels")


Config = Annotated[Svd | Tucker, Field(discriminator="method")]
