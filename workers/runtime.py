"""A model in the pipeline, in either representation, and how to load and run it.

A ModelHandle is an ONNX file on disk, a torch module in memory, or a deployment artifact (an OpenVINO IR, a
TFLite flatbuffer) made from an ONNX file, plus its input/output names and which input axes are dynamic (kept
through exports). `run` gives the same numpy outputs, in the original's layout, whatever the kind, so
evaluation compares any two handles.
"""

import json
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch

from app.archives import safe_extract
from app.schemas.errors import JobErrorCode
from app.schemas.models import is_causal_lm
from app.schemas.tasks import ModelRecord

Feeds = dict[str, np.ndarray]
UNSAFE_UPLOAD = "this model format can run code of the upload's own when loaded"


class PassFailed(Exception):
    """A pass or load that cannot go on: ends the job as failed with this code and a message that says what
    to do next (a library's own words, if any, only after ours)."""

    def __init__(self, code: JobErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KvCache:
    """The cache inputs and outputs of a causal LM exported to ONNX with one (passes.convert.causal_lm_export):
    `past_key_values.{i}.key|value` in, `present.{i}.key|value` out, each [batch, kv_heads, length, head_dim]."""

    layers: int
    kv_heads: int
    head_dim: int

    def past(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def present(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def empty(self, batch: int) -> dict[str, np.ndarray]:
        """The cache before the first token: every past of length 0."""
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32)
        return dict.fromkeys(self.past(), empty)


Kind = Literal["onnx", "torch", "openvino", "tflite"]


@dataclass
class ModelHandle:
    kind: Kind
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, list[int]]
    path: Path | None = None
    module: Any = None
    vocab_size: int | None = None
    origin: str = "onnx"
    details: dict[str, Any] = field(default_factory=dict)
    kv_cache: KvCache | None = None
    """an ONNX causal LM's cache; the pipeline feeds its prompt with an empty one and reads `logits` only"""
    source: Path | None = None
    """an OpenVINO or TFLite model: the ONNX file it was converted from (its weights and compute are counted
    there)"""
    input_transposes: dict[str, list[int]] = field(default_factory=dict)
    """a TFLite model: the axes order of each input that is laid out otherwise than the original's (NCHW ->
    NHWC is [0, 2, 3, 1]): `run` transposes the original's inputs to it"""
    output_transposes: dict[str, list[int]] = field(default_factory=dict)
    """a TFLite model: the axes order that turns each such output back into the original's layout"""
    tensorflow: Any = None
    """A TensorFlow upload's loaded model (workers.conversion.tensorflow.TensorFlowSource), which this ONNX
    handle was converted from at load: the original's outputs are its outputs. None on every later handle."""
    package: Path | None = None
    """a .pt2 model: the AOTInductor package compiled from the same program (model.aoti.pt2), delivered beside
    it; None once any later step changes the model"""

    def with_onnx(self, path: Path, output_names: list[str] | None = None) -> "ModelHandle":
        return replace(
            self,
            kind="onnx",
            path=path,
            module=None,
            output_names=output_names or self.output_names,
            tensorflow=None,
            package=None,
        )

    def with_torch(self, module: Any, path: Path | None = None, package: Path | None = None) -> "ModelHandle":
        """A torch module; `path` only when the module was loaded back from an exported file (pt2,
        TorchScript) that is still exactly this model, `package` when that .pt2 was also compiled by
        AOTInductor."""
        return replace(self, kind="torch", module=module, path=path, kv_cache=None, tensorflow=None, package=package)

    def with_deployment(self, kind: Kind, path: Path, source: Path) -> "ModelHandle":
        """An OpenVINO IR (`path`: its .xml) or TFLite model converted from the ONNX file `source`."""
        return replace(self, kind=kind, path=path, module=None, source=source, package=None)


def _dynamic(inputs: list[dict[str, Any]]) -> dict[str, list[int]]:
    return {
        i["name"]: [a for a, d in enumerate(i.get("shape") or []) if not (isinstance(d, int) and d > 0)] for i in inputs
    }


def load_original(upload: Path, model: ModelRecord, workdir: Path, max_unpacked: int) -> ModelHandle:
    """Open an uploaded model in the child. Never unpickles: ONNX is protobuf, a Hugging Face folder loads
    safetensors only and never remote code, a TensorFlow upload loads in Keras's safe mode or as a SavedModel
    whose graph was checked (workers.conversion.tensorflow) and is converted to ONNX as it loads. TorchScript
    runs code of the upload's own (its `__setstate__` runs inside torch.jit.load), so it loads only in an
    isolated child; an uploaded .pt2 never loads."""
    fmt, details = model.format, model.details
    inputs, _ = model.signature()
    names_in = [i.name for i in model.inputs]
    names_out = [o.name for o in model.outputs]
    dynamic = _dynamic(inputs)
    if fmt == "onnx":
        path = workdir / "original.onnx"
        path.symlink_to(upload)
        check_external_data(path)
        return ModelHandle(
            "onnx", names_in, names_out, dynamic, path=path, vocab_size=onnx_vocab_size(path), origin=fmt
        )
    if fmt == "onnx_zip":
        folder = workdir / "original"
        safe_extract(upload, folder, max_unpacked)
        path = folder / details["onnx_member"]
        check_external_data(path)
        return ModelHandle(
            "onnx", names_in, names_out, dynamic, path=path, vocab_size=onnx_vocab_size(path), origin=fmt
        )
    if fmt == "pt2":  # torch.export.load unpickles, execs guard code and evaluates sympy from the archive
        raise PassFailed(JobErrorCode.unsafe_model_format, f"{UNSAFE_UPLOAD}; .pt2 uploads are no longer accepted")
    if fmt == "torchscript":
        if os.environ.get("SQUEEZE_ISOLATED") != "1":  # set by workers.sandbox for a bubblewrapped child only
            raise PassFailed(
                JobErrorCode.unsafe_model_format, f"{UNSAFE_UPLOAD}; TorchScript loads only in an isolated job"
            )
        module = torch.jit.load(str(upload), map_location="cpu").eval()
        return ModelHandle("torch", names_in, names_out, dynamic, module=module, origin=fmt)
    if fmt == "hf_folder":
        folder = workdir / "original"
        safe_extract(upload, folder, max_unpacked)
        root = folder / details.get("root", ".")
        module = HuggingFaceModule(root, names_in)
        return ModelHandle(
            "torch", names_in, names_out, dynamic, module=module, origin=fmt, vocab_size=details.get("vocab_size")
        )
    if fmt in ("keras", "savedmodel"):
        from workers.conversion import tensorflow

        load = tensorflow.load_keras if fmt == "keras" else tensorflow.load_saved_model
        source = load(upload, model, workdir, max_unpacked)
        path = tensorflow.to_onnx(source, model, workdir / "original.onnx")
        return ModelHandle("onnx", names_in, names_out, dynamic, path=path, origin=fmt, tensorflow=source)
    raise PassFailed(JobErrorCode.unsupported_model_format, f"the worker cannot load format {fmt!r}")


def inline_weights(path: Path, target: Path) -> Path:
    """`path` when its weights are inside the file; else a copy at `target` with the external data read in:
    what a step hands on and the artifact a user downloads are one self-contained file."""
    model = onnx.load(str(path), load_external_data=False)
    if not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        return path
    onnx.load_external_data_for_model(model, str(path.parent))
    onnx.save(model, str(target))
    return target


def check_external_data(path: Path) -> None:
    """Every external-data location must be a relative path without `..` naming a regular file inside the
    model's own folder: not a symlink (at any level) and not a hardlink (st_nlink > 1), which could
    share its bytes with a file elsewhere."""
    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent.resolve()
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in init.external_data if e.key == "location"), "")
        ref = Path(location)
        target = folder / ref
        unsafe = (
            not location
            or "\x00" in location
            or ref.is_absolute()
            or ".." in ref.parts
            or any((folder / Path(*ref.parts[:i])).is_symlink() for i in range(1, len(ref.parts) + 1))
            or not target.resolve().is_relative_to(folder)
            or not target.is_file()
            or target.lstat().st_nlink > 1
        )
        if unsafe:
            raise PassFailed(
                JobErrorCode.unsafe_external_data,
                f"tensor {init.name!r} refers to external data "
                f"{location!r}, which is not a plain file inside the model's folder",
            )


def onnx_vocab_size(path: Path) -> int | None:
    """The row count of an embedding table fed by a graph input (token ids), so generated ids are valid."""
    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    tables = {i.name: i.dims for i in model.graph.initializer}
    sizes = [
        tables[n.input[0]][0]
        for n in model.graph.node
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in inputs and n.input[0] in tables
    ]
    return min(sizes) if sizes else None


class HuggingFaceModule(torch.nn.Module):
    """A transformers model taking its inputs positionally and returning its first output (the hidden
    states, or the logits of a task head), which is what gets exported and compared."""

    def __init__(self, root: Path, input_names: list[str]) -> None:
        super().__init__()
        import transformers

        config = json.loads((root / "config.json").read_text())
        architecture = (config.get("architectures") or ["AutoModel"])[0]
        cls = getattr(transformers, architecture, None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            cls = transformers.AutoModel
        self.model = cls.from_pretrained(
            str(root), use_safetensors=True, trust_remote_code=False, local_files_only=True
        ).eval()
        self.input_names = input_names
        self.causal_lm = is_causal_lm(config)
        self.root = root

    def forward(self, *tensors: Any) -> Any:
        extra = {"use_cache": False} if self.causal_lm else {}
        outputs = self.model(**dict(zip(self.input_names, tensors, strict=True)), return_dict=True, **extra)
        return outputs[0]


def device_of(module: Any) -> torch.device:
    """Where a torch module's weights live (the CPU for one without any): where its inputs go."""
    for tensor in (*module.parameters(), *module.buffers()):
        return torch.device(tensor.device)
    return torch.device("cpu")


class CompiledPackage(torch.nn.Module):
    """An AOTInductor package loaded back (torch._inductor.aoti_load_package), called like the module it was
    compiled from: its inputs go to `device`, where its kernels run."""

    def __init__(self, path: Path, device: torch.device) -> None:
        from torch._inductor import aoti_load_package

        super().__init__()
        self.compiled = aoti_load_package(str(path))
        self.register_buffer("device_marker", torch.empty(0, device=device), persistent=False)

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.compiled(*inputs)

    def __deepcopy__(self, memo: dict[int, Any]) -> "CompiledPackage":
        return self  # compiled kernels and constants, never changed: a copy may share them


def torch_inputs(handle: ModelHandle, feeds: Feeds) -> list[torch.Tensor]:
    """The batch as the torch model takes it: in input order, on its weights' device (a GPU method's .pt2 is
    a program of CUDA tensors)."""
    device = device_of(handle.module)
    return [torch.from_numpy(feeds[n]).to(device) for n in handle.input_names]


def run(handle: ModelHandle, feeds: Feeds, session: Any = None) -> list[np.ndarray]:
    """Outputs of the model on one batch, as numpy arrays in output order (and the original's layout). For an
    ONNX, OpenVINO or TFLite model, `session` is what `session_for` made (one is made when it is None)."""
    if handle.kind == "onnx":
        sess = session or onnx_session(handle.path, threads=1)
        return [np.asarray(o) for o in sess.run(handle.output_names, session_feeds(handle, feeds))]
    if handle.kind != "torch":
        sess = session or session_for(handle, threads=1)
        return original_layout(handle, sess(laid_out(handle, feeds)))
    with torch.inference_mode():
        result = handle.module(*torch_inputs(handle, feeds))
    tensors = result if isinstance(result, list | tuple) else [result]
    return [t.detach().float().cpu().numpy() if t.dtype.is_floating_point else t.cpu().numpy() for t in tensors]


def session_feeds(handle: ModelHandle, feeds: Feeds) -> Feeds:
    """What an onnxruntime session of `handle` is fed for one batch: its inputs, plus an empty cache for a
    causal LM exported with one (the whole batch is the prompt)."""
    inputs = {n: feeds[n] for n in handle.input_names}
    if handle.kv_cache is not None:
        inputs |= handle.kv_cache.empty(len(feeds[handle.input_names[0]]))
    return inputs


def onnx_session(path: Path | None, threads: int, device: str = "cpu") -> Any:
    """An onnxruntime session on the CPU; for a `cuda` measurement on onnxruntime's CUDA provider where this
    onnxruntime has one (onnxruntime-gpu, the worker-gpu image), else on the CPU (the report says so)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def session_for(handle: ModelHandle, threads: int, device: str = "cpu") -> Any:
    """What runs a file-backed model, as `run` takes it: an onnxruntime session, or for an OpenVINO or
    TFLite model a call from its inputs (by name, in its own layout) to its outputs in order."""
    if handle.kind == "openvino":
        return OpenVinoSession(handle.path, threads)
    if handle.kind == "tflite":
        return LiteRtSession(handle.path, threads)
    return onnx_session(handle.path, threads, device)


def laid_out(handle: ModelHandle, feeds: Feeds) -> Feeds:
    """The model's inputs, by name, each in the model's own layout (a TFLite model's may be channels-last)."""
    return {
        n: np.ascontiguousarray(feeds[n].transpose(handle.input_transposes[n]))
        if n in handle.input_transposes
        else feeds[n]
        for n in handle.input_names
    }


def original_layout(handle: ModelHandle, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """A TFLite model's outputs, each in the original's layout."""
    return [
        out.transpose(handle.output_transposes[name]) if name in handle.output_transposes else out
        for name, out in zip(handle.output_names, outputs, strict=True)
    ]


OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
"""OpenVINO's CPU plugin otherwise computes a float32 model in bf16 on CPUs with AMX or AVX512-BF16: the IR
is measured as converted (an int8 IR's quantized ops stay int8)"""


class OpenVinoSession:
    """An OpenVINO IR compiled for the CPU with one infer request, at a fixed thread count."""

    def __init__(self, xml: Path | None, threads: int) -> None:
        import openvino as ov

        config: dict[str, Any] = {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads}
        self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [np.array(results[output]) for output in self.compiled.outputs]


class LiteRtSession:
    """A TFLite model in the LiteRT interpreter (XNNPACK on the CPU), run through its signature, resized to
    each batch's shapes."""

    def __init__(self, path: Path | None, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()

        self.keys = set(self.runner.get_input_details())

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        results = self.runner(**{signature_key(name, self.keys): array for name, array in feeds.items()})
        return [np.array(results[key]) for key in sorted(results, key=signature_position)]


def signature_key(name: str, keys: Collection[str]) -> str:
    """The key of the ONNX model's input `name` among a TensorFlow signature's `keys`: the name itself, or as
    TensorFlow spells it (`input.1` -> `input_1`)."""
    return name if name in keys else re.sub(r"[^A-Za-z0-9_]", "_", name)


def signature_position(key: str) -> tuple[int, str]:
    """A TFLite signature names its outputs output_0, output_1, ... in the order the model returns them."""
    suffix = key.rsplit("_", 1)[-1]
    return (int(suffix), key) if suffix.isdigit() else (1 << 30, key)
