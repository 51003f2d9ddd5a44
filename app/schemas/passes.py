"""Every pass's config: validated in the API at submit, executed by workers.passes.<type> in the worker.

Each config names its `type`; `PassConfig` is the discriminated union of all of them, built from
PASS_CONFIGS, so adding a pass means adding its config here and its run in workers/passes/.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

STORED = "stored"
"""Validation context flag for a spec read back from the database: it repeats every field, defaults
included, so only the checks on values apply, not the ones on which fields the client set."""


class _PassBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvertConfig(_PassBase):
    """Move the model to another form: ONNX (export, or an opset change), torch (from ONNX, so PyTorch passes
    apply), or a torch artifact (`pt2`: a torch.export ExportedProgram; `torchscript`). The last explicit
    convert decides the format of the job's artifact (ONNX when there is none)."""

    type: Literal["convert"]
    to: Literal["onnx", "torch", "pt2", "torchscript"] = "onnx"
    opset: int | None = Field(
        None,
        ge=11,
        le=23,
        description="target ONNX opset; default: an ONNX model keeps "
        "its own, a torch model gets the exporter's default (18)",
    )

    @model_validator(mode="after")
    def _opset_for_onnx(self) -> "ConvertConfig":
        if self.opset is not None and self.to != "onnx":
            raise ValueError(f"opset applies to `to: onnx` only, not {self.to!r}")
        return self


class OptimizeConfig(_PassBase):
    """onnxruntime offline graph optimization, saved as a new ONNX model."""

    type: Literal["optimize"]
    level: Literal["basic", "extended"] = Field(
        "extended", description="basic: constant folding and redundant-node removal; extended: + fusions"
    )


class CalibrationConfig(_PassBase):
    """Where static quantization reads the activation ranges from."""

    dataset_id: str = Field(description="a dataset of the model's inputs (POST /v1/datasets)")
    samples: int = Field(128, ge=1, le=100_000, description="the first N samples of the dataset are run")
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax",
        description="minmax: observed range; entropy: KL-optimal clipping; percentile: clip at the 99.999th percentile",
    )


_ONLY = {
    "weight_type": {"dynamic", "static"},
    "per_channel": {"dynamic", "static"},
    "op_types": {"dynamic", "static"},
    "calibration": {"static"},
    "block_size": {"int4"},
    "symmetric": {"int4"},
    "accuracy_level": {"int4"},
    "embeddings": {"int4"},
    "representation": {"fp16", "bf16"},
}
"""The methods each method-specific field applies to."""


class QuantizeConfig(_PassBase):
    """Post-training quantization: onnxruntime.quantization on ONNX; half precision on PyTorch for GPUs."""

    type: Literal["quantize"]
    method: Literal["dynamic", "static", "int4", "fp16", "bf16"] = Field(
        description="dynamic: int8 weights, activations quantized at run time; static: int8 weights and "
        "activations (QDQ), ranges calibrated on a dataset; int4: 4-bit weight-only MatMul (and "
        "embedding Gather) in blocks; fp16: half-precision weights; bf16: bfloat16 weights and "
        "compute on PyTorch (for GPUs)"
    )
    representation: Literal["onnx", "torch"] | None = Field(
        None,
        description="fp16/bf16: convert the ONNX graph (onnx, fp16's default) or the PyTorch module "
        "(torch, bf16's default and its only form; end the pipeline with a convert to pt2 "
        "or torchscript). Inputs and outputs stay float32 either way",
    )
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = Field(
        True,
        description="one scale per output channel: same size, much closer outputs (MiniLM cosine 0.991 "
        "vs 0.966 per tensor)",
    )
    op_types: list[str] | None = Field(None, description="restrict to these op types (dynamic, static)")
    nodes_to_exclude: list[str] = Field(default_factory=list, description="node names left in float")
    calibration: CalibrationConfig | None = Field(None, description="required by static")
    block_size: int = Field(32, ge=16, le=256, description="int4: weights per scale, a power of two")
    symmetric: bool = Field(
        False,
        description="int4: symmetric blocks drop the zero points (MiniLM: 2% "
        "smaller, cosine 0.960 vs 0.971 on random token ids)",
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="int4: MatMulNBits compute type (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)"
    )
    embeddings: bool = Field(
        True,
        description="int4: also quantize embedding tables (Gather -> "
        "GatherBlockQuantized); often half a text model's weights",
    )

    @model_validator(mode="after")
    def _method_params(self, info: ValidationInfo) -> "QuantizeConfig":
        foreign = sorted(k for k in self.model_fields_set if k in _ONLY and self.method not in _ONLY[k])
        if foreign and not (info.context or {}).get(STORED):
            raise ValueError(
                f"{', '.join(foreign)} do not apply to method {self.method!r} ("
                + "; ".join(f"{k}: {'/'.join(sorted(_ONLY[k]))} only" for k in foreign)
                + ")"
            )
        if self.method == "static" and self.calibration is None:
            raise ValueError(
                'method \'static\' needs calibration data: add "calibration": {"dataset_id": '
                '"ds_...", "samples": 128, "method": "minmax"}'
            )
        if self.method == "bf16" and self.representation == "onnx":
            raise ValueError(
                "bf16 runs on PyTorch only (onnxruntime has few bfloat16 CPU kernels): drop "
                "representation or use method fp16"
            )
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size {self.block_size} is not a power of two (16, 32, 64, 128 or 256)")
        return self


class FinetuneConfig(_PassBase):
    """Training after a pass that changed the weights: cross-entropy on the dataset's `labels` when it has
    them, else MSE to the outputs of the model as it entered the pass."""

    dataset_id: str = Field(description="a training dataset: arrays named after the model's inputs, optional `labels`")
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)


class PruneConfig(_PassBase):
    """Remove weights. magnitude: zero the smallest |w| up to `sparsity`, over all layers (`global`) or each
    layer alike (`layer`); threshold: zero every |w| < `threshold`; structured: remove a `ratio` of the
    channels/features (torch-pruning, so tensors really shrink), ranked by `importance`. The final
    classifier keeps its outputs."""

    type: Literal["prune"]
    method: Literal["magnitude", "threshold", "structured"]
    sparsity: float | None = Field(None, gt=0, lt=1, description="magnitude: share of weights set to zero")
    scope: Literal["global", "layer"] = Field(
        "global", description="magnitude: rank weights across all layers or within each layer"
    )
    threshold: float | None = Field(None, gt=0, description="threshold: weights with |w| below it become zero")
    ratio: float | None = Field(None, gt=0, lt=1, description="structured: share of channels removed per layer")
    round_to: int | None = Field(
        8,
        ge=1,
        le=256,
        description="structured: channels kept per layer rounded up to a multiple of this, "
        "which CPU kernels run faster (digits CNN at 30%, onnxruntime, batch 32: 22/44 channels 1.05x faster "
        "than the original, 24/48 1.48x); null keeps the exact share",
    )
    importance: Literal["l1", "l2", "taylor"] = Field(
        "l1",
        description="structured: channel ranking by weight L1/L2 norm, or first-order Taylor (needs "
        "`finetune`'s data for the gradients)",
    )
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _method_params(self) -> "PruneConfig":
        needed = {"magnitude": "sparsity", "threshold": "threshold", "structured": "ratio"}[self.method]
        if getattr(self, needed) is None:
            raise ValueError(f"method {self.method!r} needs `{needed}`")
        own = {
            "magnitude": {"sparsity", "scope"},
            "threshold": {"threshold"},
            "structured": {"ratio", "importance", "round_to"},
        }[self.method]
        # Compared with the defaults, not model_fields_set: a stored spec holds every default explicitly.
        foreign = {
            name
            for name in ("sparsity", "scope", "threshold", "ratio", "importance", "round_to")
            if name not in own and getattr(self, name) != type(self).model_fields[name].default
        }
        if foreign:
            raise ValueError(f"{', '.join(sorted(foreign))} do not apply to method {self.method!r}")
        if self.method == "structured" and self.importance == "taylor" and self.finetune is None:
            raise ValueError("importance 'taylor' needs gradients: give `finetune` with a dataset_id")
        return self


class LowRankConfig(_PassBase):
    """Replace weight matrices by products of thin ones: svd for Linear layers (keep `rank_ratio` of the
    full rank, or the smallest rank keeping `energy` of the squared singular values), tucker for Conv2d
    (tensorly; channel ranks by `rank_ratio`). A layer whose factors would not be smaller is left alone."""

    type: Literal["lowrank"]
    method: Literal["svd", "tucker"]
    rank_ratio: float | None = Field(None, gt=0, lt=1, description="rank kept, as a share of the full rank")
    energy: float | None = Field(None, gt=0, lt=1, description="svd: share of squared singular values kept")
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _rank(self) -> "LowRankConfig":
        if self.method == "tucker" and self.energy is not None:
            raise ValueError("energy applies to method 'svd' only; give tucker a rank_ratio")
        if (self.rank_ratio is None) == (self.energy is None) and self.method == "svd":
            raise ValueError("give exactly one of rank_ratio or energy")
        if self.method == "tucker" and self.rank_ratio is None:
            raise ValueError("method 'tucker' needs `rank_ratio`")
        return self


class DistillConfig(_PassBase):
    """Train a student on the job's original model (the teacher): KL on temperature-softened logits plus
    alpha x cross-entropy when labels exist; for an embedding model, MSE (or 1 - cosine) on its outputs.
    Student: `current` (the model as it entered, e.g. pruned or factorized) or `drop_layers` (a Hugging
    Face encoder keeping every other layer, e.g. MiniLM 6 -> 3)."""

    type: Literal["distill"]
    student: Literal["current", "drop_layers"] = "current"
    dataset_id: str = Field(description="training inputs (arrays named after the model's inputs), optional `labels`")
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    temperature: float = Field(2.0, gt=0, le=100)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the cross-entropy on labels, when present")
    embedding_loss: Literal["mse", "cosine"] = Field("mse", description="loss for outputs that are not logits")


PASS_CONFIGS = (ConvertConfig, OptimizeConfig, QuantizeConfig, PruneConfig, LowRankConfig, DistillConfig)
PassConfig = Annotated[
    ConvertConfig | OptimizeConfig | QuantizeConfig | PruneConfig | LowRankConfig | DistillConfig,
    Field(discriminator="type"),
]


def pass_form(config: QuantizeConfig) -> Literal["onnx", "torch"]:
    """Which representation a quantize pass works on: torch for bf16 and for fp16 asked on torch."""
    return config.representation or ("torch" if config.method == "bf16" else "onnx")
