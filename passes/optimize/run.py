"""optimize: onnxruntime's offline graph optimization (constant folding, fusions), saved as ONNX."""

import onnxruntime as ort

from passes.optimize.config import Config
from workers.context import PassContext
from workers.runtime import ModelHandle

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    path = ctx.path("model.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[config.level]
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(str(handle.path), options, providers=["CPUExecutionProvider"])
    return handle.with_onnx(path)
