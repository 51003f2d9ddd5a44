"""quantize: post-training quantization with onnxruntime.quantization.

dynamic: int8 weights (MatMul, Gemm, Gather, Conv...), activations quantized at run time, after ORT's
recommended pre-processing (shape inference and graph cleanup). fp16: weights and compute in half
precision, inputs and outputs kept float32 so callers need not change.
"""

import logging

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from app.schemas.passes import QuantizeConfig
from workers.passes.base import Pass, PassContext
from workers.runtime import ModelHandle

log = logging.getLogger(__name__)


class QuantizePass(Pass):
    type = "quantize"
    takes = "onnx"
    config: QuantizeConfig

    def run(self, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
        path = ctx.path("model.onnx")
        if self.config.method == "fp16":
            model = convert_float_to_float16(onnx.load(str(handle.path)), keep_io_types=True,
                                             node_block_list=self.config.nodes_to_exclude or None)
            onnx.save(model, str(path))
            return handle.with_onnx(path)
        source = ctx.path("preprocessed.onnx")
        try:
            quant_pre_process(str(handle.path), str(source), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation; quantize the model as it is
            log.warning("quantization pre-processing skipped: %s", exc)
            source = handle.path
        quantize_dynamic(str(source), str(path),
                         weight_type=QuantType.QInt8 if self.config.weight_type == "int8" else QuantType.QUInt8,
                         per_channel=self.config.per_channel, op_types_to_quantize=self.config.op_types,
                         nodes_to_exclude=self.config.nodes_to_exclude)
        return handle.with_onnx(path)
