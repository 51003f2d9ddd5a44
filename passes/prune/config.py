"""prune: remove weights. Each method is its own type with only its own settings; the final classifier
keeps its outputs."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from passes.base import Part, PassConfig
from passes.finetune import FinetuneConfig


class BatchNormConfig(Part):
    """Re-estimate BatchNorm running statistics after pruning, on a dataset of the model's inputs: forward
    passes only, no training (digits CNN at 70% magnitude sparsity: see the README)."""

    dataset_id: str = Field(
        description="arrays named after the model's inputs; with `labels`, the step reports "
        "top-1 on these samples before and after"
    )
    samples: int = Field(512, ge=1, le=100_000, description="samples averaged over")
    batch_size: int = Field(64, ge=1, le=4096)


class _Prune(PassConfig):
    type: Literal["prune"]
    finetune: FinetuneConfig | None = Field(None, description="train after pruning, the zeros kept")
    batchnorm: BatchNormConfig | None = Field(
        None,
        description="re-estimate BatchNorm statistics after pruning (before `finetune`, when given) without "
        "training: recovers most of what pruning lost on a CNN, in seconds",
    )


class Magnitude(_Prune):
    """Zero the smallest |w| up to `sparsity`, over all layers (`global`) or each layer alike (`layer`)."""

    method: Literal["magnitude"]
    sparsity: float = Field(gt=0, lt=1, description="share of weights set to zero")
    scope: Literal["global", "layer"] = Field(
        "global", description="rank weights across all layers or within each layer"
    )


class Threshold(_Prune):
    """Zero every weight with |w| below `threshold`."""

    method: Literal["threshold"]
    threshold: float = Field(gt=0, description="weights with |w| below it become zero")


class Structured(_Prune):
    """Remove a `ratio` of the channels/features (torch-pruning, so tensors really shrink), ranked by
    `importance`."""

    method: Literal["structured"]
    ratio: float = Field(gt=0, lt=1, description="share of channels removed per layer")
    round_to: int | None = Field(
        8,
        ge=1,
        le=256,
        description="channels kept per layer rounded up to a multiple of this, which CPU kernels run faster "
        "(digits CNN at 30%, onnxruntime, batch 32: 22/44 channels 1.05x faster than the original, 24/48 "
        "1.48x); null keeps the exact share",
    )
    importance: Literal["l1", "l2", "taylor"] = Field(
        "l1",
        description="channel ranking by weight L1/L2 norm, or first-order Taylor (needs `finetune`'s data for "
        "the gradients)",
    )

    @model_validator(mode="after")
    def _taylor_needs_data(self) -> "Structured":
        if self.importance == "taylor" and self.finetune is None:
            raise ValueError("importance 'taylor' needs gradients: give `finetune` with a dataset_id")
        return self


class Depth(PassConfig):
    """Drop a `ratio` of a decoder's layers, those that change their input least: importance is 1 - the
    cosine between a layer's input and output hidden states on `dataset_id` (padding excluded). A Hugging
    Face causal LM; follow with `distill` (teacher = the original) to recover."""

    type: Literal["prune"]
    method: Literal["depth"]
    ratio: float = Field(0.25, gt=0, lt=1, description="share of the decoder layers removed (at least one kept)")
    dataset_id: str = Field(description="text (or arrays of the model's inputs) the importance is measured on")
    samples: int = Field(32, ge=1, le=10_000, description="the first N documents are run")


Config = Annotated[Magnitude | Threshold | Structured | Depth, Field(discriminator="method")]
