"""Model resources as the API shows them."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import TensorInfo

ModelFormat = Literal["onnx", "onnx_zip", "pt2", "torchscript", "hf_folder", "keras", "savedmodel"]


class ModelOut(BaseModel):
    id: str
    filename: str
    format: ModelFormat
    sha256: str
    size_bytes: int
    param_count: int | None = Field(None, description="null where it can only be counted by loading the model")
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
