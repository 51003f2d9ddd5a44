"""convert to a deployment format from the pipeline's ONNX: OpenVINO IR with openvino.convert_model, TFLite
through onnx2tf (ONNX -> a TensorFlow SavedModel, channels-last) and the TensorFlow Lite converter (float32,
float16, or int8 with the calibration samples as its representative dataset)."""

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.schemas.errors import JobErrorCode
from passes.convert.config import Config
from workers.context import PassContext
from workers.datasets import batches
from workers.runtime import Feeds, ModelHandle, PassFailed, run, signature_key


@contextlib.contextmanager
def converter_failure(tool: str) -> Iterator[None]:
    """A converter raising on a graph it cannot convert (onnx2tf also exits) becomes a conversion_failed."""
    try:
        yield
    except (Exception, SystemExit) as exc:  # converters raise many types; all mean "this graph did not convert"
        raise PassFailed(
            JobErrorCode.conversion_failed,
            f"{tool} could not convert this model ({type(exc).__name__}: {str(exc)[:500]}); deliver it as ONNX instead",
        ) from exc


def to_openvino(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    """The ONNX model as an OpenVINO IR (model.xml + model.bin), weights float32 or compressed to float16."""
    import openvino as ov

    path = ctx.path("openvino") / "model.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with converter_failure("openvino.convert_model"):
        model = ov.convert_model(str(handle.path))
        ov.save_model(model, str(path), compress_to_fp16=config.precision == "float16")
    ctx.metrics["openvino"] = {"version": ov.get_version(), "weights": config.precision or "float32"}
    return handle.with_deployment("openvino", path, handle.path or path)


@contextlib.contextmanager
def recursion_limit_kept() -> Iterator[None]:
    """onnx2tf sets the interpreter's recursion limit to C's INT_MAX when imported (for deep graphs): the
    process gets its own limit back afterwards, so deeply nested input elsewhere raises RecursionError
    instead of overflowing the C stack."""
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def to_tflite(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    """The ONNX model as a TFLite flatbuffer, laid out as onnx2tf lays it out (NCHW inputs become NHWC), with
    the transposes that take the original's inputs and outputs to it recorded on the handle."""
    import tensorflow as tf

    folder = ctx.path("saved_model")
    with recursion_limit_kept(), converter_failure("onnx2tf"), contextlib.redirect_stdout(io.StringIO()):
        import onnx2tf

        onnx2tf.convert(
            input_onnx_file_path=str(handle.path),
            output_folder_path=str(folder),
            output_signaturedefs=True,
            non_verbose=True,
        )
    shapes = saved_model_shapes(folder, handle.input_names)
    transposes = {n: p for n in handle.input_names if (p := layout(ctx.example[n].shape, shapes[n]))}
    converter = tflite_converter(config, folder, handle, ctx, transposes)
    path = ctx.path("model.tflite")
    with converter_failure("the TensorFlow Lite converter"):
        path.write_bytes(converter.convert())
    converted = handle.with_deployment("tflite", path, handle.path or path)
    converted.input_transposes = transposes
    converted.output_transposes = output_transposes(handle, converted, ctx.example)
    ctx.metrics["tflite"] = {
        "tensorflow": tf.__version__,
        "onnx2tf": onnx2tf.__version__,
        "precision": config.precision or "float32",
        "input_layout": {n: layout_name(len(ctx.example[n].shape), n in transposes) for n in handle.input_names},
    }
    return converted


def saved_model_shapes(folder: Path, input_names: list[str]) -> dict[str, list[int | None]]:
    """The shape of each ONNX input in onnx2tf's SavedModel signature (None where dynamic)."""
    import tensorflow as tf

    specs = tf.saved_model.load(str(folder)).signatures["serving_default"].structured_input_signature[1]
    keys = {n: signature_key(n, specs) for n in input_names}
    missing = [n for n, key in keys.items() if key not in specs]
    if missing:
        raise PassFailed(
            JobErrorCode.conversion_failed,
            f"onnx2tf's model has no input for {missing} (it has {sorted(specs)}); deliver this model as ONNX or "
            "OpenVINO instead",
        )
    return {n: specs[keys[n]].shape.as_list() for n in input_names}


def tflite_converter(
    config: Config, folder: Path, handle: ModelHandle, ctx: PassContext, transposes: dict[str, list[int]]
) -> Any:
    """The TensorFlow Lite converter for the SavedModel at the config's precision: float16 weights, or int8
    with the calibration samples as the representative dataset (float32 inputs and outputs kept; an op
    without an int8 kernel stays float)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    if config.precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif config.precision == "int8" and config.calibration is not None:
        calibration = config.calibration
        samples = batches(ctx.datasets[calibration.dataset_id], handle.input_names, 1, calibration.samples)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative(samples, transposes)
    return converter


def representative(samples: list[tuple[Feeds, Any]], transposes: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
    """The calibration samples one at a time, in the TFLite model's layout, by input name (the converter keys
    them by the tensors' own names, `input.1`, not the signature's `input_1`): its representative dataset."""
    for feeds, _ in samples:
        yield {n: np.ascontiguousarray(a.transpose(transposes[n]) if n in transposes else a) for n, a in feeds.items()}


def channels_last(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def layout(original: tuple[int, ...], converted: list[int | None]) -> list[int] | None:
    """The axes order taking an input of shape `original` to the converted model's (`converted`, None or -1
    where dynamic; the batch axis is not compared): channels-last when only it fits, or when both fit and the
    rank is 3 to 5 (onnx2tf's rule: it moves the channels of every 3-D to 5-D input last); None when the
    layout is unchanged."""

    def fits(order: list[int]) -> bool:  # the batch axis aside: a converter may fix it to 1
        return len(converted) == len(original) and all(
            c is None or c < 0 or c == original[axis] for axis, c in zip(order[1:], converted[1:], strict=True)
        )

    rank = len(original)
    if rank < 3 or not fits(channels_last(rank)):
        return None
    return channels_last(rank) if not fits(list(range(rank))) or rank <= 5 else None


def layout_name(rank: int, moved: bool) -> str:
    names = {3: ("NCW", "NWC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}
    if rank not in names:
        return "as the original"
    return f"{names[rank][1]} (channels last; the original takes {names[rank][0]})" if moved else names[rank][0]


def output_transposes(original: ModelHandle, converted: ModelHandle, example: Feeds) -> dict[str, list[int]]:
    """The axes order turning each TFLite output whose shape is the original's moved channels-last back into
    the original's layout, found by running both on the example batch."""
    expected = run(original, example)
    found = run(converted, example)  # no output transposes recorded yet: the TFLite model's own layout
    orders = {}
    for name, want, got in zip(original.output_names, expected, found, strict=True):
        moved = tuple(want.shape[axis] for axis in channels_last(want.ndim)) if want.ndim >= 3 else None
        if want.shape != got.shape and got.shape == moved:
            orders[name] = [int(axis) for axis in np.argsort(channels_last(want.ndim))]
    return orders
