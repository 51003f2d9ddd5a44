"""optimize: onnxruntime's offline graph optimization (constant folding, fusions), saved as ONNX."""

import onnxruntime as ort

from passes.optimize.config import Config
from workers.context import PassContext
from workers.runtime import ModelHandle, inline_weights

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    source = inline_weights(handle.path, ctx.path("inline.onnx"))  # type: ignore[arg-type]
    path = ctx.path("model.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[config.level]
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return handle.with_onnx(path)
