"""Training after a pass that changed the weights: a config part shared by the passes that offer it."""

from pydantic import Field

from passes.base import Part


class FinetuneConfig(Part):
    """Cross-entropy on the dataset's `labels` when it has them, else MSE to the outputs of the model as it
    entered the pass."""

    dataset_id: str = Field(description="a training dataset: arrays named after the model's inputs, optional `labels`")
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
