"""Read the structure of an ONNX file without the `onnx` package (not a runtime dependency).

The torch-free runtime needs two numbers from a router model before it routes anything: how many
token ids the word-embedding table has rows for, and how many positions the position-embedding
table covers. A tokenizer that emits a larger id, or a `max_length` past the positions, makes
onnxruntime fail at route time (`QEmbedLayerNormalization ... input index out of range`,
`invalid expand shape`). This module walks the protobuf wire format of `ModelProto` directly:
nodes (op type, inputs, outputs) and initializers (name, dims, data type), skipping tensor data
by its length (a 23 MB int8 model parses in ~10 ms).

Field numbers (onnx/onnx.proto3): ModelProto.graph = 7; GraphProto.node = 1, initializer = 5;
NodeProto.input = 1, output = 2, op_type = 4; TensorProto.dims = 1, data_type = 2, name = 8.
Standard library only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

_EMBED_LAYER_NORMS = ("EmbedLayerNormalization", "QEmbedLayerNormalization")
_PASS_THROUGH = ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze")  # keep token ids as ids


class OnnxParseError(ValueError):
    """The bytes are not an ONNX ModelProto this reader understands."""


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class GraphInfo:
    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> dims


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxParseError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise OnnxParseError("varint too long")


def _fields(buf: memoryview):
    """Yield (field number, wire type, value): int for varints/fixed, memoryview for bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise OnnxParseError("length-delimited field runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise OnnxParseError(f"unsupported wire type {wire}")
        yield number, wire, value


def _text(value) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _node(buf: memoryview) -> Node:
    node = Node("", [], [])
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number == 1:
            node.inputs.append(_text(value))
        elif number == 2:
            node.outputs.append(_text(value))
        elif number == 4:
            node.op_type = _text(value)
    return node


def _tensor(buf: memoryview) -> tuple[str, tuple[int, ...]]:
    name, dims = "", []
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed repeated int64
            pos = 0
            while pos < len(value):
                d, pos = _varint(value, pos)
                dims.append(d)
        elif number == 8 and wire == 2:
            name = _text(value)
    return name, tuple(dims)


def read_graph(path: str | os.PathLike) -> GraphInfo:
    """Nodes and initializer shapes of the ONNX file at `path` (OnnxParseError if not ONNX)."""
    with open(path, "rb") as fh:
        buf = memoryview(fh.read())
    graph = None
    for number, wire, value in _fields(buf):
        if number == 7 and wire == 2:
            graph = value
    if graph is None:
        raise OnnxParseError("no graph in the file")
    info = GraphInfo()
    for number, wire, value in _fields(graph):
        if wire != 2:
            continue
        if number == 1:
            info.nodes.append(_node(value))
        elif number == 5:
            name, dims = _tensor(value)
            info.initializers[name] = dims
    return info


def embedding_limits(info: GraphInfo, ids_input: str = "input_ids") -> tuple[int | None, int | None]:
    """(word-embedding rows, position-embedding rows) of a router graph; None where not found.

    Word rows: the smallest first dimension of the initializers that `input_ids` indexes directly
    (Gather data, or the word table of a [Q]EmbedLayerNormalization), following Cast/Reshape.
    Positions: the position table of a [Q]EmbedLayerNormalization, else the first 2-D initializer
    named like `position_embeddings` (the unfused BERT graph). minilm-static has none.
    """
    ids = {ids_input}
    for node in info.nodes:  # nodes are topologically sorted in a valid ONNX graph
        if node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0] in ids:
            ids.update(node.outputs)
    inits = info.initializers
    rows: list[int] = []
    positions: list[int] = []
    for node in info.nodes:
        if node.op_type in _EMBED_LAYER_NORMS and node.inputs and node.inputs[0] in ids:
            if len(node.inputs) > 2 and len(inits.get(node.inputs[2], ())) == 2:
                rows.append(inits[node.inputs[2]][0])
            if len(node.inputs) > 3 and len(inits.get(node.inputs[3], ())) == 2:
                positions.append(inits[node.inputs[3]][0])
        elif node.op_type == "Gather" and len(node.inputs) == 2 and node.inputs[1] in ids:
            dims = inits.get(node.inputs[0])
            if dims:
                rows.append(dims[0])
    if not positions:
        positions = [d[0] for n, d in inits.items() if "position_embeddings" in n and len(d) == 2]
    return (min(rows) if rows else None), (min(positions) if positions else None)
