"""quantize nncf: nncf.quantize on the ONNX model with the calibration samples in the batches the model
takes, saved as one ONNX file of QDQ nodes that onnxruntime and OpenVINO both run."""

import onnx

from app.schemas.errors import JobErrorCode
from passes.quantize.nncf.config import Config
from workers.context import PassContext
from workers.datasets import batches
from workers.runtime import ModelHandle, PassFailed


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    import nncf

    data = ctx.datasets[config.calibration.dataset_id]
    batch_size = len(next(iter(ctx.example.values())))
    feeds = [f for f, _ in batches(data, handle.input_names, batch_size, config.calibration.samples)]
    if batch_size > 1 and len(feeds) > 1 and len(next(iter(feeds[-1].values()))) != batch_size:
        feeds.pop()  # a short last batch would not fit a fixed batch size; the ranges do not need it
    model = onnx.load(str(handle.path))
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(feeds),
            preset=nncf.QuantizationPreset(config.preset),
            subset_size=len(feeds),
            fast_bias_correction=config.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
            ignored_scope=nncf.IgnoredScope(names=config.nodes_to_exclude) if config.nodes_to_exclude else None,
        )
    except (nncf.errors.ValidationError, ValueError, RuntimeError, KeyError) as exc:
        raise PassFailed(
            JobErrorCode.quantization_failed,
            f"NNCF could not quantize this graph ({type(exc).__name__}: {str(exc)[:300]}); check that the "
            "calibration dataset holds the model's inputs, exclude the node it names with nodes_to_exclude, or "
            "try method static (onnxruntime)",
        ) from exc
    path = ctx.path("model.onnx")
    onnx.save(quantized, str(path))
    ctx.metrics["nncf"] = {"version": nncf.__version__, "calibration_batches": len(feeds)}
    return handle.with_onnx(path)
