"""Tell a Keras 3 `.keras` file or a zipped TensorFlow SavedModel apart, read its signature, and refuse the
ones that would run code or touch files, processes or the network when loaded or called. Nothing here
imports tensorflow or keras and nothing uploaded is executed: a `.keras` is judged by its config.json, a
SavedModel by the op names of its graph and function library (app/services/saved_model_graph.py).

The rules (docs/security.md):
- `.keras`: every serialized object must be a Keras built-in (`module` keras or keras.*, no
  `registered_name` of a custom class); a `Lambda` layer or a serialized Python function (`__lambda__`)
  carries Python code and is refused, as is `TFSMLayer`, which loads another SavedModel from a path.
- SavedModel: an op of DENIED_OPS anywhere (graph or any library function, called or not) refuses it;
  checkpoint ops (CHECKPOINT_OPS) are in every SavedModel's own save/restore functions and are refused
  only where a signature reaches them. The worker runs the `serving_default` signature only.
- Legacy Keras `.h5` (HDF5) is refused: it stores Lambda layers as marshalled bytecode and needs h5py to
  read; Keras 3 saves `.keras`, which these rules cover.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.errors import UnsafeModelFormat, UnsupportedModelFormat
from app.services.saved_model_graph import SavedModelGraph, Signature, read_saved_model

SERVING_SIGNATURE = "serving_default"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
H5_HELP = (
    "Legacy Keras HDF5 files are not accepted: they store Lambda layers as marshalled Python bytecode. Save the "
    "model in the Keras 3 format (model.save('model.keras')) and upload that, or export a SavedModel "
    "(model.export('saved_model')) and upload the folder as a zip."
)
KERAS_CODE_HELP = (
    "Squeeze loads Keras models with safe_mode and never runs code from an upload. Replace the Lambda layer by "
    "built-in layers (or ops that Keras serializes, e.g. keras.layers.Rescaling, keras.ops in a built-in "
    "layer), save with model.save('model.keras') and upload again; or export a SavedModel "
    "(model.export('saved_model')) and upload the folder as a zip."
)
SAVED_MODEL_OPS_HELP = (
    "These ops read or write files, start processes or reach the network when the model runs, so Squeeze does "
    "not load the model. Export a model whose serving function computes only tensors (no tf.io, tf.py_function, "
    "tf.print to a file, summaries or datasets inside it) and upload it again."
)
DENIED_OPS = frozenset(
    {
        # files
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "ImmutableConst",
        "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2",
        "PrintV2",  # output_stream may name a file
        "DecodeProtoV2",  # descriptor_source may name a file
        "EncodeProto",
        "LoadAndRemapMatrix",
        "GenerateVocabRemapping",
        "Save",
        "SaveSlices",
        "Restore",
        "RestoreSlice",
        "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2",
        "TextLineReader",
        "TextLineReaderV2",
        "TFRecordReader",
        "TFRecordReaderV2",
        "WholeFileReader",
        "WholeFileReaderV2",
        "LMDBReader",
        "IdentityReader",
        "IdentityReaderV2",
        "TextLineDataset",
        "TFRecordDataset",
        "TFRecordDatasetV2",
        "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2",
        "CSVDataset",
        "CSVDatasetV2",
        "ExperimentalCSVDataset",
        "LMDBDataset",
        "ExperimentalLMDBDataset",
        "SqlDataset",
        "ExperimentalSqlDataset",
        "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "SnapshotDataset",
        "SnapshotDatasetV2",
        "SnapshotDatasetReader",
        "SnapshotChunkDataset",
        "SnapshotNestedDatasetReader",
        "CacheDataset",
        "CacheDatasetV2",
        "CreateSummaryFileWriter",
        "CreateSummaryDbWriter",
        "SummaryWriter",
        "WriteSummary",
        "WriteScalarSummary",
        "WriteHistogramSummary",
        "WriteImageSummary",
        "WriteAudioSummary",
        "WriteGraphSummary",
        "WriteRawProtoSummary",
        "ImportEvent",
        "FlushSummaryWriter",
        "CloseSummaryWriter",
        # processes and Python
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        # the network and other processes
        "DebugIdentity",
        "DebugIdentityV2",
        "DebugIdentityV3",
        "DebugNanCount",
        "DebugNumericSummary",
        "DebugNumericSummaryV2",
        "RemoteCall",
        "RemoteFusedGraphExecute",
        "RpcServer",
        "RpcServerStart",
        "RpcServerRegister",
        "RpcClient",
        "RpcCall",
        "RpcCheckStatus",
        "RpcGetValue",
        "DeleteRpcFutureResource",
        "DataServiceDataset",
        "DataServiceDatasetV2",
        "DataServiceDatasetV3",
        "DataServiceDatasetV4",
        "RegisterDataset",
        "RegisterDatasetV2",
        "_Send",
        "_Recv",
        "_HostSend",
        "_HostRecv",
        "Send",
        "Recv",
        "CollectiveInitializeCommunicator",
    }
)
"""Ops that read or write files, run Python or another process, or talk to the network or other tasks."""
DENIED_PREFIXES = ("Rpc", "Collective", "DataService", "Debug")
"""Families of such ops, whatever version suffix a future tensorflow adds."""
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})
"""In every SavedModel's own save and restore functions; refused only where a signature reaches them."""
KERAS_CODE_CLASSES = {"Lambda": "a Lambda layer", "__lambda__": "a serialized Python function", "TFSMLayer": ""}


@dataclass
class TensorFlowModel:
    """What inspection found: the format name, the signature, and what the worker needs to load it."""

    format: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)


def denied(op: str) -> bool:
    return op in DENIED_OPS or op.startswith(DENIED_PREFIXES)


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (a dict with a `class_name`) in a Keras config, nested ones included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_keras_config(config: dict[str, Any], filename: str) -> None:
    """Refuse a `.keras` config that holds code (Lambda, a serialized function), loads another model from a
    path (TFSMLayer), or names a class outside Keras (a custom or registered class, another module)."""
    for obj in _objects(config):
        name, module = str(obj.get("class_name")), obj.get("module")
        layer = (obj.get("config") or {}).get("name") if isinstance(obj.get("config"), dict) else None
        where = f" ({layer!r})" if isinstance(layer, str) else ""
        if name in ("Lambda", "__lambda__"):
            raise UnsafeModelFormat(
                f"{filename!r} holds {KERAS_CODE_CLASSES[name]}{where}, which carries Python code. {KERAS_CODE_HELP}",
                refused_layers=[name],
            )
        if name == "TFSMLayer":
            raise UnsafeModelFormat(
                f"{filename!r} holds a TFSMLayer{where}, which loads another SavedModel from a path when the "
                "model loads. Upload that SavedModel itself as a zip.",
                refused_layers=[name],
            )
        outside = module is not None and not (module == "keras" or str(module).startswith("keras."))
        if outside or obj.get("registered_name") not in (None, name):
            raise UnsafeModelFormat(
                f"{filename!r} uses class {name!r} from {module or obj.get('registered_name')!r}, which is not "
                "part of Keras; loading it would need (and import) code that is not in the file. Build the model "
                "from Keras's built-in layers, or export a SavedModel (model.export('saved_model')) and upload "
                "the folder as a zip.",
                refused_layers=[name],
            )


def _batch_shape(layer: dict[str, Any]) -> list[Any] | None:
    config = layer.get("config") or {}
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    return list(shape) if isinstance(shape, list) else None


def _dims(shape: list[Any] | None) -> list[int | str | None] | None:
    """A Keras/TF shape as the API shows it: the batch axis named `batch`, other unknown axes null."""
    if shape is None:
        return None
    return [
        "batch" if i == 0 and d is None else d if isinstance(d, int) and d >= 0 else None for i, d in enumerate(shape)
    ]


def inspect_keras(config: dict[str, Any], filename: str) -> TensorFlowModel:
    """A `.keras` config.json (a Sequential or Functional model): checked, then its inputs (InputLayers)
    and outputs (the output layers; a Dense output's width is known)."""
    check_keras_config(config, filename)
    body = config.get("config") or {}
    layers = [layer for layer in body.get("layers") or [] if isinstance(layer, dict)]
    by_name = {(layer.get("config") or {}).get("name"): layer for layer in layers}
    inputs_layers = [layer for layer in layers if layer.get("class_name") == "InputLayer"]
    if config.get("class_name") == "Functional":
        inputs_layers = [by_name[ref[0]] for ref in _layer_refs(body.get("input_layers")) if ref[0] in by_name]
        outputs_layers = [by_name[ref[0]] for ref in _layer_refs(body.get("output_layers")) if ref[0] in by_name]
    else:
        outputs_layers = layers[-1:]
    if not inputs_layers or not outputs_layers:
        raise UnsupportedModelFormat(
            f"{filename!r} is a Keras file whose inputs cannot be read from config.json (a subclassed model?). "
            "Build it as a Sequential or Functional model with keras.Input, or export a SavedModel "
            "(model.export('saved_model')) and upload the folder as a zip."
        )
    inputs = [
        {
            "name": str((layer.get("config") or {}).get("name")),
            "dtype": _dtype(layer),
            "shape": _dims(_batch_shape(layer)),
        }
        for layer in inputs_layers
    ]
    outputs = [
        {"name": str((layer.get("config") or {}).get("name")), "dtype": "float32", "shape": _output_shape(layer)}
        for layer in outputs_layers
    ]
    details = {"keras_class": config.get("class_name"), "layers": len(layers)}
    return TensorFlowModel("keras", inputs, outputs, details)


def _dtype(layer: dict[str, Any]) -> str:
    """An InputLayer's dtype: a name, or a serialized DTypePolicy holding one."""
    dtype = (layer.get("config") or {}).get("dtype") or "float32"
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name") or "float32"
    return str(dtype)


def _layer_refs(value: Any) -> list[list[Any]]:
    """Functional input_layers/output_layers: [name, node, tensor] or a list of them."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    return [ref for ref in value or [] if isinstance(ref, list) and ref and isinstance(ref[0], str)]


def _output_shape(layer: dict[str, Any]) -> list[int | str | None] | None:
    units = (layer.get("config") or {}).get("units")
    return ["batch", units] if layer.get("class_name") == "Dense" and isinstance(units, int) else None


def inspect_saved_model(data: bytes, filename: str, root: str) -> TensorFlowModel:
    """saved_model.pb's bytes: refused when its graph uses a denied op, else its serving signature."""
    graph = read_saved_model(data)
    found = sorted(op for op in graph.ops() if denied(op))
    if found:
        raise UnsafeModelFormat(
            f"{filename!r} is a SavedModel whose graph uses {', '.join(found)}. {SAVED_MODEL_OPS_HELP}",
            refused_ops=found,
        )
    signature = graph.signatures.get(SERVING_SIGNATURE)
    if signature is None or not signature.inputs or not signature.outputs:
        raise UnsupportedModelFormat(
            f"{filename!r} is a SavedModel without a {SERVING_SIGNATURE!r} signature with inputs and outputs; "
            "export it with model.export(dir) (Keras) or tf.saved_model.save(module, dir, signatures=...)"
        )
    reached = sorted({op for s in graph.signatures.values() for op in reachable_ops(graph, s)} & CHECKPOINT_OPS)
    if reached:
        raise UnsafeModelFormat(
            f"{filename!r} is a SavedModel whose signatures run {', '.join(reached)} (checkpoint files). "
            + SAVED_MODEL_OPS_HELP,
            refused_ops=reached,
        )
    inputs = [{"name": t.key, "dtype": t.dtype, "shape": _dims(t.shape)} for t in signature.inputs]
    outputs = [{"name": t.key, "dtype": t.dtype, "shape": _dims(t.shape)} for t in signature.outputs]
    details = {"root": root, "signature": SERVING_SIGNATURE, "ops": len(graph.ops()), "functions": len(graph.functions)}
    return TensorFlowModel("savedmodel", inputs, outputs, details)


def _node_name(ref: str) -> str:
    """A node input or signature tensor (`name:0`, `^name`) as the node's name."""
    return ref.lstrip("^").split(":", 1)[0]


def reachable_ops(graph: SavedModelGraph, signature: Signature) -> set[str]:
    """The ops the signature can run: the graph nodes its tensors depend on, and every function those
    nodes call, transitively (a function's every node counts)."""
    nodes = {n.name: n for n in graph.nodes}
    todo = [_node_name(t.tensor) for t in signature.inputs + signature.outputs]
    seen: set[str] = set()
    called: set[str] = set()
    ops: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        ops.add(nodes[name].op)
        called |= nodes[name].calls | {nodes[name].op}  # a node may call a library function by its name
        todo.extend(_node_name(i) for i in nodes[name].inputs)
    functions = list(called)
    visited: set[str] = set()
    while functions:
        name = functions.pop()
        if name in visited:
            continue
        visited.add(name)
        for node in graph.functions.get(name, []):
            ops.add(node.op)
            functions.extend(node.calls | {node.op})
    return ops
