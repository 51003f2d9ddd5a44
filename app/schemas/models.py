"""Model resources as the API shows them."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import TensorInfo

CAUSAL_LM_TYPES = {"llama", "qwen2", "mistral", "gpt2"}
"""decoder-only model types whose causal-LM class transformers ships (loaded without remote code)"""
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


def is_causal_lm(config: dict[str, Any]) -> bool:
    """A Hugging Face config of a decoder-only language model of an architecture transformers ships: its head
    predicts the next token (the upload and the worker decide alike)."""
    architecture = (config.get("architectures") or [""])[0]
    return config.get("model_type") in CAUSAL_LM_TYPES and architecture.endswith(("ForCausalLM", "LMHeadModel"))
