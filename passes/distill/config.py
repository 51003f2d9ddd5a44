"""distill: train a student on the job's original model (the teacher)."""

from typing import Literal

from pydantic import Field

from passes.base import PassConfig


class Distill(PassConfig):
    """KL on temperature-softened logits plus alpha x cross-entropy when labels exist; for an embedding
    model, MSE (or 1 - cosine) on its outputs. Student: `current` (the model as it entered, e.g. pruned or
    factorized) or `drop_layers` (a Hugging Face encoder keeping every other layer, e.g. MiniLM 6 -> 3)."""

    type: Literal["distill"]
    student: Literal["current", "drop_layers"] = "current"
    dataset_id: str = Field(description="training inputs (arrays named after the model's inputs), optional `labels`")
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    temperature: float = Field(2.0, gt=0, le=100)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the cross-entropy on labels, when present")
    embedding_loss: Literal["mse", "cosine"] = Field("mse", description="loss for outputs that are not logits")


Config = Distill
