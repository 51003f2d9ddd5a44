"""The saved_model.pb reader, on SavedModels encoded here field by field (tensorflow's .proto numbers), so
the reader is checked against the wire format itself rather than against tensorflow's own parser."""

import pytest

from app.services.saved_model_graph import GraphFormatError, read_saved_model


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def message(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(body)) + body


def text(number: int, value: str) -> bytes:
    return message(number, value.encode())


def number_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def func_attr(key: str, name: str, nested: bytes = b"", number: int = 5) -> bytes:
    """An attr map entry (NodeDef field 5, NameAttrList field 2) whose AttrValue.func (10) is
    NameAttrList{1: name, 2: attr entries}."""
    return message(number, text(1, key) + message(2, message(10, text(1, name) + nested)))


def node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: bytes = b"") -> bytes:
    return message(1, text(1, name) + text(2, op) + b"".join(text(3, i) for i in inputs) + attrs)


def function(name: str, *nodes: bytes) -> bytes:
    """FunctionDef{1: OpDef{1: name}, 3: NodeDef...} (node bytes re-tagged as field 3)."""
    return message(1, message(1, text(1, name)) + b"".join(b"\x1a" + n[1:] for n in nodes))


def tensor_info(key: str, tensor: str, dtype: int, dims: tuple[int, ...]) -> bytes:
    shape = b"".join(message(2, number_field(1, d)) for d in dims)
    return message(1, text(1, key) + message(2, text(1, tensor) + number_field(2, dtype) + message(3, shape)))


def saved_model(nodes: bytes, functions: bytes, signature: bytes) -> bytes:
    graph = nodes + message(2, functions)
    meta = message(2, graph) + message(5, text(1, "serving_default") + message(2, signature))
    return number_field(1, 1) + message(2, meta)


def sample() -> bytes:
    nodes = node("x", "Placeholder") + node(
        "call", "StatefulPartitionedCall", ("x", "^x"), func_attr("f", "outer", func_attr("g", "inner", number=2))
    )
    functions = function("outer", node("m", "MatMul")) + function("inner", node("w", "WriteFile"))
    signature = tensor_info("pixels", "x:0", 1, (-1, 8)) + message(
        2, text(1, "logits") + message(2, text(1, "call:0") + number_field(2, 1) + message(3, b""))
    )
    return saved_model(nodes, functions, signature)


def test_reads_ops_of_the_graph_and_every_function() -> None:
    graph = read_saved_model(sample())
    assert graph.ops() == {"Placeholder", "StatefulPartitionedCall", "MatMul", "WriteFile"}
    assert set(graph.functions) == {"outer", "inner"}


def test_reads_the_functions_a_node_calls_through_nested_attrs() -> None:
    graph = read_saved_model(sample())
    call = next(n for n in graph.nodes if n.name == "call")
    assert call.calls == {"outer", "inner"}
    assert call.inputs == ["x", "^x"]


def test_reads_the_serving_signature_with_unknown_dims_as_none() -> None:
    signature = read_saved_model(sample()).signatures["serving_default"]
    assert [(t.key, t.tensor, t.dtype, t.shape) for t in signature.inputs] == [("pixels", "x:0", "float32", [None, 8])]
    assert [(t.key, t.shape) for t in signature.outputs] == [("logits", [])]


@pytest.mark.parametrize("cut", [1, 7, 20, -3])
def test_truncated_bytes_are_malformed(cut: int) -> None:
    with pytest.raises(GraphFormatError):
        read_saved_model(sample()[:cut])


def test_a_group_wire_type_is_malformed() -> None:
    with pytest.raises(GraphFormatError, match="wire type"):
        read_saved_model(varint(2 << 3 | 3))


def test_an_overlong_varint_is_malformed() -> None:
    with pytest.raises(GraphFormatError, match="varint"):
        read_saved_model(b"\x08" + b"\xff" * 11)


def test_attribute_nesting_is_bounded() -> None:
    nested = b""
    for depth in range(40):
        nested = func_attr("a", f"f{depth}", nested, number=2)
    nested = func_attr("top", "f", nested)
    with pytest.raises(GraphFormatError, match="nest"):
        read_saved_model(saved_model(node("n", "NoOp", attrs=nested), b"", b""))


def test_mutated_bytes_parse_or_are_malformed_never_anything_else() -> None:
    """Any byte flipped or cut: the reader answers a graph or GraphFormatError (a 422), never another error."""
    import random

    data = sample()
    rng = random.Random(0)
    outcomes = {"parsed": 0, "malformed": 0}
    for _ in range(2000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            read_saved_model(bytes(mutated[: rng.randint(1, len(mutated))]))
            outcomes["parsed"] += 1
        except GraphFormatError:
            outcomes["malformed"] += 1
    assert outcomes["parsed"] and outcomes["malformed"], outcomes
