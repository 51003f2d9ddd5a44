"""Tell what an uploaded file is and read its signature, without torch and without unpickling anything.

ONNX is read as its graph without weights (app/services/onnx_skeleton.py: tensor data is skipped on disk,
so memory follows the graph, not the file); a zip by its directory and the few members it needs;
TorchScript from the code in its archive, by a linear scan of a bounded read; a Hugging Face folder from
config.json, tokenizer_config.json and the safetensors headers. Pickles are refused by their bytes,
ExportedProgram (.pt2) by its layout (loading one runs code from the archive), TorchScript unless the
operator allowed it (docs/security.md). Every parse error of a hostile file is a 422 naming the file,
never a 500.
"""

import json
import math
import pickletools
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import onnx
from google.protobuf.message import DecodeError
from onnx.helper import tensor_dtype_to_np_dtype

from app.archives import UnsafeArchive, check_zip
from app.errors import FormatMismatch, ModelLimitsExceeded, UnsafeModelFormat, UnsupportedModelFormat
from app.schemas.models import is_causal_lm
from app.services.onnx_skeleton import MAX_SKELETON_BYTES, Skeleton, SkeletonError, SkeletonTooLarge, read_skeleton
from app.services.saved_model_graph import GraphFormatError
from app.services.tf_inspection import H5_HELP, HDF5_MAGIC, TensorFlowModel, inspect_keras, inspect_saved_model

SAFE_FORMATS = (
    "ONNX (.onnx from torch.onnx.export, or a .zip of the .onnx with its external data), a Hugging Face "
    "model folder zipped with *.safetensors weights, a Keras 3 .keras file, or a TensorFlow SavedModel folder "
    "zipped"
)
PICKLE_HELP = (
    "Loading a pickle runs whatever code it carries, so Squeeze never unpickles an upload. Upload instead: "
    + SAFE_FORMATS
    + "."
)
PT2_HELP = (
    "Loading a torch.export archive (.pt2) runs code it carries (pickled constants and inputs, guard code, "
    "symbolic expressions), so Squeeze does not load uploaded .pt2 files. Export the model to ONNX instead "
    "(torch.onnx.export(model, args, 'model.onnx', dynamo=True)) and upload that, or upload: " + SAFE_FORMATS + "."
)
TORCHSCRIPT_HELP = (
    "TorchScript runs code of the file's own when loaded (__setstate__) and run, so this service does not "
    "accept it (an operator may, with ALLOW_TORCHSCRIPT_UPLOADS=true, where jobs run isolated). Export the "
    "model to ONNX (torch.onnx.export) and upload that, or upload: " + SAFE_FORMATS + "."
)
_PUNCTUATION = re.compile(r"[()\[\]{},]")
"""One character class, no repetition: the regex engine cannot backtrack on it."""
MAX_CODE_BYTES = 1 << 20
"""The most of a TorchScript code file read for the forward signature."""
MAX_JSON_BYTES = 16 << 20
"""The most of a config.json or tokenizer_config.json read (real ones are a few KiB)."""
MAX_SAFETENSORS_HEADER = 16 << 20
"""The largest safetensors header read (a model of thousands of tensors has well under 1 MiB)."""
PARSE_ERRORS = (
    ValueError,  # json, pickletools, protobuf and int parsing
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    NotImplementedError,  # zipfile: an unsupported compression method
    GraphFormatError,  # saved_model.pb
)
"""What parsing a hostile archive or header can raise: the upload is malformed, not our bug."""

_SAFETENSORS_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}


# What a file name's extension claims; a file whose bytes are another format is refused (422).
CLAIMED_FORMATS = {
    ".onnx": {"onnx"},
    ".zip": {"onnx_zip", "hf_folder", "torchscript", "savedmodel", "keras"},
    ".keras": {"keras"},
}
MAX_SAVED_MODEL_PB_BYTES = 64 << 20
"""The largest saved_model.pb read (its graph and functions; weights are in variables/, constants may not be)."""


@dataclass(frozen=True)
class GraphLimits:
    """The largest ONNX graph accepted: nodes (subgraphs included) and bytes of any one tensor."""

    max_nodes: int
    max_tensor_bytes: int


@dataclass
class ModelInfo:
    format: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    param_count: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _looks_like_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def inspect_model(
    path: Path,
    filename: str,
    max_unpacked_bytes: int,
    limits: GraphLimits | None = None,
    allow_torchscript: bool = False,
) -> ModelInfo:
    """Detect the format of the file at `path` and read its inputs, outputs and size; with `limits`,
    refuse ONNX graphs past them. The bytes decide the format; a name claiming another one is a 422."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if head == HDF5_MAGIC or PurePosixPath(filename.lower()).suffix in (".h5", ".hdf5"):
        raise UnsafeModelFormat(f"{filename!r} is a legacy Keras HDF5 file. {H5_HELP}")
    if _looks_like_pickle(head):
        raise UnsafeModelFormat(f"{filename!r} is a Python pickle. {PICKLE_HELP}")
    if PurePosixPath(filename.lower()).suffix == ".pt2":
        raise UnsafeModelFormat(f"{filename!r} is named as a torch.export archive. {PT2_HELP}")
    try:
        if zipfile.is_zipfile(path):
            info = _inspect_zip(path, filename, max_unpacked_bytes, limits)
        else:
            info = _inspect_onnx(path, filename, limits)
    except PARSE_ERRORS as exc:
        raise UnsupportedModelFormat(
            f"{filename!r} is malformed ({type(exc).__name__} while reading it). Accepted: {SAFE_FORMATS}."
        ) from exc
    if info.format == "torchscript" and not allow_torchscript:
        raise UnsafeModelFormat(f"{filename!r} is TorchScript. {TORCHSCRIPT_HELP}")
    claimed = CLAIMED_FORMATS.get(PurePosixPath(filename.lower()).suffix)
    if claimed is not None and info.format not in claimed:
        raise FormatMismatch(
            f"{filename!r} is named like {' or '.join(sorted(claimed))} but its bytes are "
            f"{info.format}; upload it under a name that matches what it is"
        )
    return info


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    itemsize = 1 if tensor.data_type == onnx.TensorProto.STRING else tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(math.prod(tensor.dims)) * int(itemsize)


def _graph_tensors(graph: onnx.GraphProto) -> tuple[int, list[onnx.TensorProto]]:
    """(node count, every initializer and constant tensor), subgraphs of If/Loop/Scan included; a sparse
    tensor counts as its values and as a dense tensor of its shape, which is what a runtime may build."""
    nodes, tensors = len(graph.node), list(graph.initializer)
    sparse = list(graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            tensors.extend([attr.t] if attr.HasField("t") else [])
            tensors.extend(attr.tensors)
            sparse.extend([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])
            sparse.extend(attr.sparse_tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                sub_nodes, sub_tensors = _graph_tensors(sub)
                nodes += sub_nodes
                tensors.extend(sub_tensors)
    for tensor in sparse:
        tensors.append(tensor.values)
        tensors.append(onnx.TensorProto(name=tensor.values.name, data_type=tensor.values.data_type, dims=tensor.dims))
    return nodes, tensors


def check_graph_limits(model: onnx.ModelProto, what: str, limits: GraphLimits) -> None:
    """Refuse a graph with too many nodes or a tensor declaring more bytes than allowed (`what` names the
    file in the message)."""
    nodes, tensors = _graph_tensors(model.graph)
    if nodes > limits.max_nodes:
        raise ModelLimitsExceeded(
            f"{what} has {nodes} graph nodes; at most {limits.max_nodes} are accepted (MAX_GRAPH_NODES)"
        )
    for tensor in tensors:
        try:
            declared = _tensor_bytes(tensor)
        except (KeyError, ValueError) as exc:
            raise UnsupportedModelFormat(f"{what}: tensor {tensor.name!r} has an unknown data type") from exc
        if declared > limits.max_tensor_bytes:
            raise ModelLimitsExceeded(
                f"{what}: tensor {tensor.name!r} declares {declared} bytes; at "
                f"most {limits.max_tensor_bytes} are accepted (MAX_TENSOR_BYTES)"
            )


def _tensor_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    ttype = value.type.tensor_type
    dims: list[int | str | None] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        else:
            dims.append(d.dim_param or None)
    return {"name": value.name, "dtype": tensor_dtype_to_np_dtype(ttype.elem_type).name, "shape": dims}


def onnx_signature(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Graph inputs (initializers excluded), outputs and the number of weights in initializers."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in model.graph.output]
    params = sum(math.prod(init.dims) for init in model.graph.initializer)
    return inputs, outputs, params


def _read_skeleton(fh: IO[bytes], size: int, what: str, limits: GraphLimits | None) -> onnx.ModelProto:
    """The graph without weights from `fh`, checked against `limits`; 422 naming `what` when it is not ONNX."""
    try:
        skeleton = read_skeleton(fh, size)
    except (SkeletonError, DecodeError) as exc:
        raise UnsupportedModelFormat(
            f"{what} is neither a zip nor a valid ONNX protobuf ({type(exc).__name__}). Accepted: {SAFE_FORMATS}."
        ) from exc
    except SkeletonTooLarge as exc:
        raise ModelLimitsExceeded(
            f"{what}: the graph without its weights passes {MAX_SKELETON_BYTES} bytes; keep constants as "
            "initializers (or external data) rather than in node attributes and metadata"
        ) from exc
    if not skeleton.model.graph.output:
        raise UnsupportedModelFormat(
            f"{what} parses as protobuf but has no ONNX graph outputs. Accepted: {SAFE_FORMATS}."
        )
    if limits is not None:
        check_graph_limits(skeleton.model, what, limits)
        check_raw_lengths(skeleton, what)
    return skeleton.model


def check_raw_lengths(skeleton: Skeleton, what: str) -> None:
    """Refuse a tensor whose inline bytes disagree with its declared shape (a runtime would trust the shape)."""
    for tensor, held in skeleton.raw_lengths:
        declared = _tensor_bytes(tensor)
        if held != declared:
            raise UnsupportedModelFormat(
                f"{what}: tensor {tensor.name!r} holds {held} bytes but its shape {list(tensor.dims)} needs "
                f"{declared}; the file is corrupt"
            )


def _inspect_onnx(path: Path, filename: str, limits: GraphLimits | None) -> ModelInfo:
    with path.open("rb") as fh:
        model = _read_skeleton(fh, path.stat().st_size, repr(filename), limits)
    external = [i.name for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise UnsupportedModelFormat(
            f"{filename!r} keeps {len(external)} tensors in external data files that were not uploaded. "
            "Upload the data files in the same request (curl -F file=@model.onnx -F data=@model.onnx.data), "
            "or zip the .onnx file together with its data files and upload the zip."
        )
    inputs, outputs, params = onnx_signature(model)
    details = {"opset": _opset(model), "ir_version": model.ir_version, "op_types": _op_types(model)}
    return ModelInfo("onnx", inputs, outputs, params, details)


def _op_types(model: onnx.ModelProto) -> list[str]:
    """The operator types of the main graph (a search proposes int4 only where MatMul or Gather exist)."""
    return sorted({node.op_type for node in model.graph.node})


def _opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _inspect_zip(path: Path, filename: str, max_unpacked_bytes: int, limits: GraphLimits | None) -> ModelInfo:
    with zipfile.ZipFile(path) as zf:
        try:
            infos = check_zip(zf, max_unpacked_bytes)
        except UnsafeArchive as exc:
            raise UnsupportedModelFormat(f"{filename!r}: {exc}") from exc
        names = [i.filename for i in infos if not i.is_dir()]
        leaves = {PurePosixPath(n).name for n in names}
        parts = {p for n in names for p in PurePosixPath(n).parts[:-1]}
        if any(n.endswith("models/model.json") or n.endswith("serialized_exported_program.json") for n in names):
            raise UnsafeModelFormat(f"{filename!r} is a torch.export archive (.pt2). {PT2_HELP}")
        if "data.pkl" in leaves and "constants.pkl" in leaves and "code" in parts:
            return _inspect_torchscript(zf, names)
        if {"config.json", "metadata.json", "model.weights.h5"} <= set(names):
            return _model_info(inspect_keras(_read_json(zf, "config.json"), filename))
        saved = [n for n in names if PurePosixPath(n).name == "saved_model.pb"]
        if len(saved) == 1:
            return _inspect_saved_model(zf, saved[0], filename)
        if "config.json" in leaves:
            return _inspect_hf(zf, names, filename)
        onnx_files = [n for n in names if n.endswith(".onnx")]
        if len(onnx_files) == 1:
            return _inspect_onnx_zip(zf, onnx_files[0], filename, limits)
        if "data.pkl" in leaves:
            raise UnsafeModelFormat(f"{filename!r} is a torch.save checkpoint (a zipped pickle). {PICKLE_HELP}")
    raise UnsupportedModelFormat(f"{filename!r} is a zip, but not one Squeeze recognises. Accepted: {SAFE_FORMATS}.")


def _model_info(found: TensorFlowModel) -> ModelInfo:
    """A TensorFlow model's signature; its weights are counted in the worker, from the converted graph."""
    return ModelInfo(found.format, found.inputs, found.outputs, None, found.details)


def _inspect_saved_model(zf: zipfile.ZipFile, member: str, filename: str) -> ModelInfo:
    """A zipped SavedModel folder: its graph read without tensorflow, refused when it uses a denied op."""
    if zf.getinfo(member).file_size > MAX_SAVED_MODEL_PB_BYTES:
        raise ModelLimitsExceeded(
            f"{member!r} in {filename!r} is larger than {MAX_SAVED_MODEL_PB_BYTES} bytes; keep the weights in "
            "variables/ (tf.saved_model.save does) rather than as constants in the graph"
        )
    with zf.open(member) as fh:
        data = fh.read(MAX_SAVED_MODEL_PB_BYTES + 1)
    return _model_info(inspect_saved_model(data, filename, str(PurePosixPath(member).parent)))


def _inspect_onnx_zip(zf: zipfile.ZipFile, member: str, filename: str, limits: GraphLimits | None) -> ModelInfo:
    with zf.open(member) as fh:
        model = _read_skeleton(fh, zf.getinfo(member).file_size, f"{member!r} in {filename!r}", limits)
    folder = PurePosixPath(member).parent
    names = set(zf.namelist())
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in init.external_data if e.key == "location"), "")
        ref = PurePosixPath(location)
        if ref.is_absolute() or ".." in ref.parts or str(folder / ref) not in names and location not in names:
            raise UnsupportedModelFormat(
                f"tensor {init.name!r} refers to external data {location!r}, which is not a file inside the "
                "model's own folder in the zip. Keep data files beside the .onnx file."
            )
    inputs, outputs, params = onnx_signature(model)
    return ModelInfo(
        "onnx_zip",
        inputs,
        outputs,
        params,
        {"opset": _opset(model), "ir_version": model.ir_version, "onnx_member": member},
    )


def _torchscript_root_class(zf: zipfile.ZipFile, names: list[str]) -> tuple[str, str] | None:
    """(code member, class name) of the scripted top module, read from data.pkl's first GLOBAL opcode.
    pickletools only parses opcodes; nothing is unpickled."""
    data_pkl = next(n for n in names if PurePosixPath(n).name == "data.pkl")
    prefix = str(PurePosixPath(data_pkl).parent)
    with zf.open(data_pkl) as fh:
        opcodes = pickletools.genops(fh)
        found = next(
            (a for op, a, _ in opcodes if op.name == "GLOBAL" and isinstance(a, str) and a.startswith("__torch__")),
            None,
        )
    if found is not None:
        module, cls = found.split(" ", 1)
        return f"{prefix}/code/{module.replace('.', '/')}.py", cls
    return None


def forward_arguments(code: str) -> list[str]:
    """The argument names after `self` of the first `def forward(` in `code`, by one left-to-right pass
    over its brackets and commas that tracks depth (annotations such as Tuple[Tensor, Tensor] hold commas):
    linear in the code's length whatever it holds, unlike a backtracking regex."""
    start = code.find("def forward(")
    if start < 0:
        return []
    start += len("def forward(")
    args: list[str] = []
    depth, arg_start = 0, start
    for mark in _PUNCTUATION.finditer(code, start):
        char = mark.group()
        if char in "([{":
            depth += 1
        elif char == "," and depth == 0:
            args.append(code[arg_start : mark.start()])
            arg_start = mark.end()
        elif char in ")]}":
            if depth == 0:
                args.append(code[arg_start : mark.start()])
                break
            depth -= 1
    names = [arg.split(":")[0].strip() for arg in args]
    return [name for name in names[1:] if name.isidentifier()]


def _inspect_torchscript(zf: zipfile.ZipFile, names: list[str]) -> ModelInfo:
    root = _torchscript_root_class(zf, names)
    arguments: list[str] = []
    if root and root[0] in names:
        with zf.open(root[0]) as fh:
            code = fh.read(MAX_CODE_BYTES).decode("utf-8", "replace")
        found = code.find(f"class {root[1]}(")
        arguments = forward_arguments(code[found:]) if found >= 0 else []
    return ModelInfo(
        "torchscript",
        [{"name": name, "dtype": "float32", "shape": None} for name in arguments],
        [{"name": "output_0", "dtype": "float32", "shape": None}],
        None,
        {"note": "TorchScript keeps no input shapes: give input_shapes for every input in a job"},
    )


def _safetensors_params(zf: zipfile.ZipFile, member: str) -> int:
    with zf.open(member) as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > MAX_SAFETENSORS_HEADER:
            raise UnsupportedModelFormat(f"{member!r} has an implausible safetensors header ({length} bytes)")
        header = json.loads(fh.read(length))
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta.get("dtype") not in _SAFETENSORS_DTYPES:
            raise UnsupportedModelFormat(f"{member!r}: tensor {name!r} has unknown dtype {meta.get('dtype')!r}")
        total += math.prod(meta["shape"])
    return total


def _read_json(zf: zipfile.ZipFile, member: str) -> dict[str, Any]:
    """A small JSON member, refused past MAX_JSON_BYTES instead of read whole."""
    if zf.getinfo(member).file_size > MAX_JSON_BYTES:
        raise UnsupportedModelFormat(f"{member!r} is larger than the {MAX_JSON_BYTES} bytes a config may have")
    with zf.open(member) as fh:
        value = json.loads(fh.read(MAX_JSON_BYTES + 1))
    if not isinstance(value, dict):
        raise UnsupportedModelFormat(f"{member!r} is not a JSON object")
    return value


def _inspect_hf(zf: zipfile.ZipFile, names: list[str], filename: str) -> ModelInfo:
    config_member = min((n for n in names if PurePosixPath(n).name == "config.json"), key=len)
    root = PurePosixPath(config_member).parent
    in_root = [n for n in names if PurePosixPath(n).parent == root]
    weights = [n for n in in_root if n.endswith(".safetensors")]
    if not weights:
        pickled = [PurePosixPath(n).name for n in in_root if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
        detail = f" It has only pickled weights ({', '.join(pickled)})." if pickled else ""
        raise UnsafeModelFormat(
            f"{filename!r} is a Hugging Face folder without *.safetensors weights.{detail} {PICKLE_HELP} "
            "Convert the weights with `model.save_pretrained(dir, safe_serialization=True)`."
        )
    config = _read_json(zf, config_member)
    if "auto_map" in config:
        raise UnsafeModelFormat(
            f"{filename!r}'s config.json has an `auto_map`: it names model code shipped in the folder, and Squeeze "
            "never runs an upload's code (no trust_remote_code). Remove `auto_map` when the architecture is one "
            "transformers ships (Llama, Qwen2, Mistral, GPT-2, BERT...), or upload the model as ONNX."
        )
    tokenizer_config: dict[str, Any] = {}
    tok_member = str(root / "tokenizer_config.json") if str(root) != "." else "tokenizer_config.json"
    if tok_member in names:
        tokenizer_config = _read_json(zf, tok_member)
    input_names = tokenizer_config.get("model_input_names") or (
        ["input_ids", "token_type_ids", "attention_mask"]
        if config.get("type_vocab_size")
        else ["input_ids", "attention_mask"]
    )
    inputs = [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in input_names]
    architecture = (config.get("architectures") or ["AutoModel"])[0]
    params = sum(_safetensors_params(zf, w) for w in weights)
    details = {
        "architecture": architecture,
        "model_type": config.get("model_type"),
        "vocab_size": config.get("vocab_size"),
        "max_position_embeddings": config.get("max_position_embeddings"),
        "has_tokenizer": tok_member in names,
        "root": str(root),
    }
    if is_causal_lm(config):
        details["causal_lm"] = causal_lm_details(config, params)
        logits = {"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", config.get("vocab_size")]}
        return ModelInfo("hf_folder", inputs, [logits], params, details)
    output = "logits" if "For" in architecture else "last_hidden_state"
    out_shape: list[int | str | None] = (
        ["batch", config.get("num_labels", None)]
        if output == "logits"
        else ["batch", "sequence", config.get("hidden_size")]
    )
    return ModelInfo("hf_folder", inputs, [{"name": output, "dtype": "float32", "shape": out_shape}], params, details)


def causal_lm_details(config: dict[str, Any], params: int) -> dict[str, Any]:
    """What a user checks first on an LLM upload: architecture, size, context length, vocabulary, layers."""
    return {
        "architecture": (config.get("architectures") or [""])[0],
        "model_type": config.get("model_type"),
        "param_count": params,
        "context_length": config.get("max_position_embeddings") or config.get("n_positions"),
        "vocab_size": config.get("vocab_size"),
        "layers": config.get("num_hidden_layers") or config.get("n_layer"),
        "hidden_size": config.get("hidden_size") or config.get("n_embd"),
        "attention_heads": config.get("num_attention_heads") or config.get("n_head"),
        "kv_heads": config.get("num_key_value_heads") or config.get("num_attention_heads") or config.get("n_head"),
    }
