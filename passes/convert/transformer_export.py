"""The export form of a Hugging Face encoder that onnxruntime's transformer optimizer can fuse.

transformers 5.x builds the attention mask with guard ops (IsNaN/Where around SDPA's softmax, vmap'd mask
functions) that cost speed on onnxruntime and hide the attention pattern from the BERT fusions. Exported
with eager attention and the mask given as the classic additive 4-D mask ((1 - mask) x lowest float), the
graph is the pattern passes.optimize.transformer fuses into Attention. The model is unchanged: the form is
used only when its outputs match the module's own on the example batch; else the module exports as it is.
"""

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from workers.runtime import Feeds, HuggingFaceModule

log = logging.getLogger(__name__)
ENCODERS = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
"""model types whose self-attention takes an additive 4-D mask and matches the BERT fusion patterns"""
MAX_ERROR = 1e-4


class AdditiveMaskEncoder(torch.nn.Module):
    """The Hugging Face encoder taking its inputs positionally, its attention mask turned into the additive
    4-D mask before the model sees it."""

    def __init__(self, module: HuggingFaceModule) -> None:
        super().__init__()
        self.model = module.model
        self.input_names = module.input_names
        self.dtype = next(module.model.parameters()).dtype

    def forward(self, *tensors: torch.Tensor) -> Any:
        inputs = dict(zip(self.input_names, tensors, strict=True))
        mask = inputs["attention_mask"].unsqueeze(1).unsqueeze(2).to(self.dtype)
        inputs["attention_mask"] = (1.0 - mask) * torch.finfo(self.dtype).min
        return self.model(**inputs, return_dict=True)[0]


def fits(module: Any) -> bool:
    return (
        isinstance(module, HuggingFaceModule)
        and "attention_mask" in module.input_names
        and getattr(module.model.config, "model_type", None) in ENCODERS
        and not getattr(module.model.config, "is_decoder", False)
    )


@contextlib.contextmanager
def export_form(module: Any, example: Feeds) -> Iterator[Any]:
    """The module to hand torch.onnx.export: the fusable form of a BERT-like encoder when it computes the
    same outputs, else the module itself. The encoder's attention implementation is restored after."""
    if not fits(module):
        yield module
        return
    args = [torch.from_numpy(example[n]) for n in module.input_names]
    with torch.inference_mode():
        expected = module(*args)
    previous = module.model.config._attn_implementation
    module.model.set_attn_implementation("eager")
    try:
        form = AdditiveMaskEncoder(module).eval()
        with torch.inference_mode():
            error = float((form(*args) - expected).abs().max())
        if error > MAX_ERROR:
            log.warning("the additive-mask export form moved the outputs by %g; exporting the module as it is", error)
            module.model.set_attn_implementation(previous)
            yield module
        else:
            yield form
    finally:
        module.model.set_attn_implementation(previous)
