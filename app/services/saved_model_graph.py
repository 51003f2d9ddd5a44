"""Read a TensorFlow SavedModel's saved_model.pb without tensorflow: the op of every node, in the graph and
in every function of its library, the functions each node calls, and the serving signatures.

The protobuf wire format is walked by hand (tensorflow's .proto numbers, noted on each reader), so the API
tells what a SavedModel would run without importing tensorflow or executing anything. Only the fields read
here are decoded; every other field is skipped by its length. Malformed bytes raise GraphFormatError.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_DEPTH = 32
"""Nesting of attribute values (a func attr holding attrs holding funcs...): deeper is crafted."""
TF_DTYPES = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    17: "uint16",
    19: "float16",
    22: "uint32",
    23: "uint64",
}
"""tensorflow/core/framework/types.proto DataType numbers, by numpy's name."""


class GraphFormatError(ValueError):
    """The bytes are not a well-formed SavedModel protobuf (truncated, a bad length or wire type)."""


@dataclass
class Node:
    """One NodeDef: its op, its inputs (as written: `name:0`, `^name`) and the functions its attrs name."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    calls: set[str] = field(default_factory=set)


@dataclass
class TensorSpec:
    """A signature's tensor: its key in the signature, the graph tensor it is, its dtype and shape."""

    key: str
    tensor: str
    dtype: str
    shape: list[int | None] | None


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class SavedModelGraph:
    """What saved_model.pb holds, as far as refusing or describing it needs: the nodes of its graph(s),
    the nodes of each library function by name, and the signatures by key."""

    nodes: list[Node] = field(default_factory=list)
    functions: dict[str, list[Node]] = field(default_factory=dict)
    signatures: dict[str, Signature] = field(default_factory=dict)

    def ops(self) -> set[str]:
        """Every op name in the graph and in every library function, called or not."""
        return {n.op for n in self.nodes} | {n.op for body in self.functions.values() for n in body}


Field = tuple[int, int, int | memoryview]
"""(field number, wire type, value: an int for varints and fixed fields, the bytes for length-delimited)"""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    for count in range(10):
        if pos >= len(buf):
            raise GraphFormatError("the file ends inside a varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
        if count == 9:
            break
    raise GraphFormatError("a varint is longer than 10 bytes")


def fields(buf: memoryview) -> Iterator[Field]:
    """The fields of one message, in order; groups (wire types 3, 4) are not used by tensorflow."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise GraphFormatError("a fixed-size field runs past its message")
            yield number, wire, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise GraphFormatError("a field is longer than what is left of its message")
            yield number, wire, buf[pos : pos + length]
            pos += length
        else:
            raise GraphFormatError(f"wire type {wire} is not used by tensorflow's protos")


def _bytes(value: int | memoryview) -> memoryview:
    if isinstance(value, int):
        raise GraphFormatError("a message field holds a number")
    return value


def _text(value: int | memoryview) -> str:
    return bytes(_bytes(value)).decode("utf-8", "replace")


def _signed(value: int | memoryview) -> int:
    if not isinstance(value, int):
        raise GraphFormatError("a number field holds bytes")
    return value - (1 << 64) if value >= 1 << 63 else value


def read_saved_model(data: bytes) -> SavedModelGraph:
    """saved_model.pb: SavedModel{2: repeated MetaGraphDef}."""
    graph = SavedModelGraph()
    for number, _, value in fields(memoryview(data)):
        if number == 2:
            _meta_graph(_bytes(value), graph)
    return graph


def _meta_graph(buf: memoryview, graph: SavedModelGraph) -> None:
    """MetaGraphDef{2: GraphDef graph_def, 5: map<string, SignatureDef> signature_def}."""
    for number, _, value in fields(buf):
        if number == 2:
            _graph_def(_bytes(value), graph)
        elif number == 5:
            key, body = _map_entry(_bytes(value))
            graph.signatures[key] = _signature(body)


def _map_entry(buf: memoryview) -> tuple[str, memoryview]:
    """A map<string, message> entry: {1: key, 2: value}."""
    key, body = "", memoryview(b"")
    for number, _, value in fields(buf):
        if number == 1:
            key = _text(value)
        elif number == 2:
            body = _bytes(value)
    return key, body


def _graph_def(buf: memoryview, graph: SavedModelGraph) -> None:
    """GraphDef{1: repeated NodeDef node, 2: FunctionDefLibrary library{1: repeated FunctionDef}}."""
    for number, _, value in fields(buf):
        if number == 1:
            graph.nodes.append(_node(_bytes(value)))
        elif number == 2:
            for inner, _, function in fields(_bytes(value)):
                if inner == 1:
                    name, body = _function(_bytes(function))
                    graph.functions[name] = body


def _function(buf: memoryview) -> tuple[str, list[Node]]:
    """FunctionDef{1: OpDef signature{1: name}, 3: repeated NodeDef node_def}."""
    name, nodes = "", []
    for number, _, value in fields(buf):
        if number == 1:
            name = next((_text(v) for n, _, v in fields(_bytes(value)) if n == 1), "")
        elif number == 3:
            nodes.append(_node(_bytes(value)))
    return name, nodes


def _node(buf: memoryview) -> Node:
    """NodeDef{1: name, 2: op, 3: repeated input, 5: map<string, AttrValue> attr}."""
    node = Node("", "")
    for number, _, value in fields(buf):
        if number == 1:
            node.name = _text(value)
        elif number == 2:
            node.op = _text(value)
        elif number == 3:
            node.inputs.append(_text(value))
        elif number == 5:
            _, attr = _map_entry(_bytes(value))
            node.calls |= _called(attr, 0)
    return node


def _called(attr: memoryview, depth: int) -> set[str]:
    """The function names an AttrValue holds: AttrValue{1: ListValue list{9: repeated NameAttrList func},
    10: NameAttrList func}; NameAttrList{1: name, 2: map<string, AttrValue> attr}."""
    if depth > MAX_DEPTH:
        raise GraphFormatError(f"attribute values nest more than {MAX_DEPTH} deep")
    names: set[str] = set()
    for number, wire, value in fields(attr):
        if number == 1 and wire == 2:
            names |= {n for inner, _, v in fields(_bytes(value)) if inner == 9 for n in _func(_bytes(v), depth)}
        elif number == 10 and wire == 2:
            names |= _func(_bytes(value), depth)
    return names


def _func(buf: memoryview, depth: int) -> set[str]:
    names: set[str] = set()
    for number, _, value in fields(buf):
        if number == 1:
            names.add(_text(value))
        elif number == 2:
            names |= _called(_map_entry(_bytes(value))[1], depth + 1)
    return names


def _signature(buf: memoryview) -> Signature:
    """SignatureDef{1: map<string, TensorInfo> inputs, 2: map<string, TensorInfo> outputs}."""
    signature = Signature([], [])
    for number, _, value in fields(buf):
        if number in (1, 2):
            key, info = _map_entry(_bytes(value))
            (signature.inputs if number == 1 else signature.outputs).append(_tensor_info(key, info))
    return signature


def _tensor_info(key: str, buf: memoryview) -> TensorSpec:
    """TensorInfo{1: name, 2: DataType dtype, 3: TensorShapeProto tensor_shape}."""
    spec = TensorSpec(key, "", "unknown", None)
    for number, _, value in fields(buf):
        if number == 1:
            spec.tensor = _text(value)
        elif number == 2:
            spec.dtype = TF_DTYPES.get(_signed(value), f"dtype_{_signed(value)}")
        elif number == 3:
            spec.shape = _shape(_bytes(value))
    return spec


def _shape(buf: memoryview) -> list[int | None] | None:
    """TensorShapeProto{2: repeated Dim{1: int64 size}, 3: bool unknown_rank}; size -1 is unknown."""
    dims: list[int | None] = []
    for number, _, value in fields(buf):
        if number == 3 and value:
            return None
        if number == 2:
            size = next((_signed(v) for n, _, v in fields(_bytes(value)) if n == 1), 0)
            dims.append(size if size >= 0 else None)
    return dims
