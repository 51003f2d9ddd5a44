"""ONNX -> torch, our own (onnx2torch and onnx2pytorch import torchvision, which does not load beside our torch).

The graph becomes an `OnnxModule`: Conv, ConvTranspose, Gemm, MatMul(+Add), BatchNormalization,
LayerNormalization, LSTM, GRU and RNN with constant weights become real torch layers holding those weights as
parameters, so pruning, factorization and training see them; every other covered node is a small torch
function (one module per operator family). The module runs the nodes in graph order, takes the inputs
positionally and returns the graph's outputs; it exports back to ONNX with torch.onnx.export.
"""

from workers.conversion.onnx_to_torch.build import SUPPORTED, onnx_to_torch
from workers.conversion.onnx_to_torch.module import ConversionUnsupported, OnnxModule

__all__ = ["SUPPORTED", "ConversionUnsupported", "OnnxModule", "onnx_to_torch"]
