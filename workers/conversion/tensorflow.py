"""A TensorFlow upload in the child: a Keras 3 `.keras` file loaded with Keras's safe mode, or a SavedModel's
`serving_default` signature, converted to ONNX with tf2onnx so every ONNX pass applies. The TensorFlow model
stays beside the ONNX one (TensorFlowSource) and gives the original's outputs, which the conversion is
checked against in the pipeline (workers.pipeline.canonical_form), as any conversion is.

The upload rules (app/services/tf_inspection.py) are checked again here before anything loads: a model
stored before a rule existed, or a rule the API was bypassed for, still never runs.
"""

import contextlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from app.archives import UnsafeArchive, check_zip, safe_extract
from app.errors import SqueezeError
from app.schemas.errors import JobErrorCode
from app.schemas.tasks import ModelRecord
from app.services.tf_inspection import SERVING_SIGNATURE, check_keras_config, inspect_saved_model
from workers.runtime import Feeds, PassFailed

OPSET = 17
"""tf2onnx's opset for the conversion; an opset change is a `convert` step of its own."""


@dataclass
class TensorFlowSource:
    """The loaded TensorFlow model as one tf.function of the upload's inputs (in order) returning its outputs
    (in order), and the tools that converted it (for the report)."""

    function: Any
    input_names: list[str]
    converter: str

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        outputs = self.function(*[feeds[name] for name in self.input_names])
        return [np.asarray(o) for o in outputs]


def _tensorflow(threads: int) -> Any:
    """tensorflow, imported with the job's threads (it reads them once, at its first op)."""
    import tensorflow as tf

    # RuntimeError: tensorflow already ran in this process (not in a job's child), so it keeps its threads
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _input_signature(tf: Any, model: ModelRecord) -> list[Any]:
    return [
        tf.TensorSpec(
            [d if isinstance(d, int) else None for d in (i.shape or [])] if i.shape is not None else None,
            tf.as_dtype(i.dtype),
            name=i.name,
        )
        for i in model.inputs
    ]


def _refused(exc: SqueezeError) -> PassFailed:
    return PassFailed(JobErrorCode.unsafe_model_format, exc.message)


def load_keras(upload: Path, model: ModelRecord, workdir: Path, max_unpacked: int) -> TensorFlowSource:
    """The `.keras` zip, its config checked again, loaded with safe_mode=True (Keras refuses Lambda layers
    and any deserialization that would run code)."""
    try:
        with zipfile.ZipFile(upload) as zf:
            check_zip(zf, max_unpacked)
            check_keras_config(json.loads(zf.read("config.json")), "the uploaded model")
    except UnsafeArchive as exc:
        raise PassFailed(JobErrorCode.unsupported_model_format, f"the uploaded .keras file: {exc}") from exc
    except SqueezeError as exc:
        raise _refused(exc) from exc
    tf = _tensorflow(torch.get_num_threads())
    import keras

    path = workdir / "original.keras"  # keras reads the format from the name
    path.symlink_to(upload)
    try:
        loaded = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except ValueError as exc:  # safe mode refusing code, or a config that does not build
        raise PassFailed(
            JobErrorCode.unsafe_model_format if "safe_mode" in str(exc) else JobErrorCode.conversion_failed,
            f"Keras could not load the model in safe mode: {str(exc)[:500]}",
        ) from exc
    names = [i.name for i in model.inputs]

    def call(*tensors: Any) -> list[Any]:
        return _in_order(loaded(list(tensors) if len(tensors) > 1 else tensors[0], training=False))

    function = tf.function(call, input_signature=_input_signature(tf, model))
    return TensorFlowSource(function, names, f"keras {keras.__version__} (safe_mode), tensorflow {tf.__version__}")


def _in_order(outputs: Any) -> list[Any]:
    """A Keras model's outputs as a list in its output order (one tensor, a list, or a dict by name)."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def load_saved_model(upload: Path, model: ModelRecord, workdir: Path, max_unpacked: int) -> TensorFlowSource:
    """The zipped SavedModel, its graph checked again, loaded with tf.saved_model.load (which restores the
    variables and runs no function of the model's own); its serving signature called by input name."""
    folder = workdir / "original"
    safe_extract(upload, folder, max_unpacked)
    root = folder / str(model.details.get("root", "."))
    try:
        inspect_saved_model((root / "saved_model.pb").read_bytes(), "the uploaded model", str(root))
    except SqueezeError as exc:
        raise _refused(exc) from exc
    tf = _tensorflow(torch.get_num_threads())
    loaded = tf.saved_model.load(str(root))  # referenced below: its variables live as long as it does
    names = [i.name for i in model.inputs]
    keys = [o.name for o in model.outputs]

    def call(*tensors: Any) -> list[Any]:
        outputs = loaded.signatures[SERVING_SIGNATURE](**dict(zip(names, tensors, strict=True)))
        return [outputs[k] for k in keys]

    function = tf.function(call, input_signature=_input_signature(tf, model))
    return TensorFlowSource(function, names, f"tensorflow {tf.__version__} (tf.saved_model.load)")


def to_onnx(source: TensorFlowSource, model: ModelRecord, path: Path) -> Path:
    """The TensorFlow function as ONNX (tf2onnx.convert.from_function), its inputs and outputs named as the
    upload's signature names them."""
    import tf2onnx

    signature = source.function.input_signature
    try:
        proto, _ = tf2onnx.convert.from_function(source.function, input_signature=signature, opset=OPSET)
    except Exception as exc:  # tf2onnx raises many types; all mean "this model did not convert"
        raise PassFailed(
            JobErrorCode.conversion_failed,
            f"tf2onnx could not convert the TensorFlow model to ONNX: {type(exc).__name__}: {str(exc)[:600]}",
        ) from exc
    rename_outputs(proto, [o.name for o in model.outputs])
    onnx.save(proto, str(path))
    source.converter += f", tf2onnx {tf2onnx.__version__} (opset {OPSET})"
    return path


def rename_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """Give the graph outputs the upload's output names (tf2onnx names them after TensorFlow's tensors)."""
    graph = proto.graph
    if len(names) != len(graph.output):
        raise PassFailed(
            JobErrorCode.conversion_failed,
            f"the converted model has {len(graph.output)} outputs but the upload declares {len(names)}",
        )
    used = {t for n in graph.node for t in (*n.input, *n.output)} | {i.name for i in graph.input}
    for output, name in zip(graph.output, names, strict=True):
        if output.name == name:
            continue
        if name in used:
            raise RuntimeError(f"output name {name!r} is already a tensor of the converted graph")
        for node in graph.node:
            node.output[:] = [name if t == output.name else t for t in node.output]
            node.input[:] = [name if t == output.name else t for t in node.input]
        output.name = name
