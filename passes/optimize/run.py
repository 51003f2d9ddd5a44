"""optimize: a BERT-like encoder gets onnxruntime's transformer fusions (passes.optimize.transformer), kept
when they match; any other graph, or `transformer_fusions: off`, gets onnxruntime's offline graph
optimization (constant folding, fusions), saved as ONNX. The transformer-fused graph is not run through the
offline optimizer after: onnxruntime applies its own fusions at load anyway, and the graph stays made of
ops the quantize pass handles (Attention, MatMul)."""

import onnxruntime as ort

from passes.optimize.config import Config
from passes.optimize.transformer import fuse
from workers.context import PassContext
from workers.runtime import ModelHandle, inline_weights

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    source = inline_weights(handle.path, ctx.path("inline.onnx"))  # type: ignore[arg-type]
    path = ctx.path("model.onnx")
    if config.transformer_fusions == "auto":
        fused = fuse(source, path, ctx.example)
        ctx.metrics["transformer_fusions"] = fused
        if fused["applied"]:
            return handle.with_onnx(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[config.level]
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return handle.with_onnx(path)
