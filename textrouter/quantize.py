"""int8 quantisation of a router's fp32 ONNX file: the methods `audiorouter export --quant` offers.

`quantize_int8(fp32, int8, QuantOptions(), method)` writes one concrete method; the `auto` ladder
and its agreement check live in textrouter.export (measurements: docs/router-runtime.md).
onnx / onnxruntime.quantization are imported inside the functions (the `[train]` extra).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from textrouter.errors import RouterError

# "auto" tries these in order and keeps the first that passes the int8-vs-fp32 agreement check.
QUANT_LADDER = ("dynamic", "dynamic-ffn2-fp32", "blockwise")
QUANT_METHODS = ("auto", *QUANT_LADDER)
WEIGHT_TYPES = ("qint8", "quint8")
QUANT_OP_SETS = {"matmul": ("MatMul",), "matmul+gather": ("MatMul", "Gather")}
EMBEDDING_MIN_ELEMENTS = 1_000_000  # only big lookup tables (the 30522x384 word embeddings)
# router.json quantization.fp32_nodes names this for every dynamic export since stop 23: the
# runtime reads it to know a mixture head's P @ M stayed fp32 (textrouter.runtime.batch_invariant)
MIXTURE_FP32_NODES = "a mixture head's P(category) @ M if any"


@dataclass(frozen=True)
class QuantOptions:
    """int8 quantisation of model.onnx -> model.int8.onnx (measurements: docs/router-runtime.md).

    method:
      "dynamic": onnxruntime quantize_dynamic, int8 weights (per channel by default),
        activations quantised per tensor at run time (VNNI int8 kernels: the fastest, ~23 MB).
        MiniLM's feed-forward activations have outliers, so per-tensor activation scales cost
        accuracy: 98.2% action agreement with fp32 on the default router.
      "dynamic-ffn2-fp32": the same, but the six FFN output projections (input = GELU output,
        the worst outliers) stay fp32 (~34 MB; 99.2% on the default router).
      "blockwise": MatMulNBits 8-bit weights in blocks of `block_size` (accuracy_level 4) and
        int8 word embeddings with one scale per row (~27 MB; 99.6% on the default router), but
        no faster than fp32 on CPUs where onnxruntime has no fast 8-bit MatMulNBits kernel.
      "auto" (default): try dynamic, dynamic-ffn2-fp32, blockwise in this order; keep the first
        that passes the agreement check (every attempt is recorded in router.json metrics).
    """

    method: str = "auto"
    block_size: int = 16           # blockwise: weights per scale along K (16, 32, 64, 128)
    weight_type: str = "qint8"     # dynamic: QInt8 (signed; U8S8 VNNI kernels) or QUInt8
    ops: str = "matmul+gather"     # dynamic: quantise MatMul weights (+ the embedding Gathers)
    per_channel: bool = True       # dynamic: one weight scale per output channel

    def __post_init__(self) -> None:
        if self.method not in QUANT_METHODS:
            raise ValueError(f"quantisation method must be one of {list(QUANT_METHODS)} (got {self.method!r})")
        if self.block_size not in (16, 32, 64, 128):
            raise ValueError(f"block_size must be one of [16, 32, 64, 128] (got {self.block_size})")
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"weight_type must be one of {list(WEIGHT_TYPES)} (got {self.weight_type!r})")
        if self.ops not in QUANT_OP_SETS:
            raise ValueError(f"ops must be one of {sorted(QUANT_OP_SETS)} (got {self.ops!r})")

    @property
    def ladder(self) -> tuple[str, ...]:
        return QUANT_LADDER if self.method == "auto" else (self.method,)

    def describe(self, method: str) -> dict:
        if method == "blockwise":
            return {"method": method, "matmul": f"MatMulNBits 8-bit, block {self.block_size}, "
                    "accuracy_level 4", "embeddings": "int8 per row"}
        return {"method": method, "weight_type": self.weight_type, "op_types": list(QUANT_OP_SETS[self.ops]),
                "per_channel": self.per_channel,
                "fp32_nodes": ("FFN output MatMuls, " if method == "dynamic-ffn2-fp32" else "")
                + MIXTURE_FP32_NODES}


def _graph(model_or_path):
    """The onnx ModelProto of a path (graph only, no external weights), or the model itself."""
    if not isinstance(model_or_path, (str, os.PathLike)):
        return model_or_path
    import onnx

    return onnx.load(str(model_or_path), load_external_data=False)


def _fused_op_types(model) -> set[str]:
    return {n.op_type for n in _graph(model).graph.node} & {"Attention", "EmbedLayerNormalization"}


def quantize_int8(fp32_path: Path, int8_path: Path, quant: QuantOptions, method: str | None = None) -> list[str]:
    """Write int8_path from fp32_path with one concrete method (default: the first of the ladder).

    Returns the quantised op types (dynamic methods) for router.json."""
    method = method or quant.ladder[0]
    op_types: list[str] = ["MatMul"]
    tmp = int8_path.with_name(int8_path.name + ".tmp.onnx")
    if method == "blockwise":
        _quantize_blockwise(fp32_path, tmp, quant.block_size)
    else:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        graph = _graph(fp32_path)  # read once for the three graph queries below
        exclude = _ffn_output_matmuls(graph) if method == "dynamic-ffn2-fp32" else []
        exclude += _mixture_matmuls(graph)
        weight_type = QuantType.QInt8 if quant.weight_type == "qint8" else QuantType.QUInt8
        op_types = list(QUANT_OP_SETS[quant.ops])
        fused = _fused_op_types(graph)  # a graph fused by optimize_fp32
        if "Attention" in fused:
            op_types.append("Attention")  # -> QAttention (int8 QKV weights)
        if "EmbedLayerNormalization" in fused and "Gather" in op_types:
            op_types.append("EmbedLayerNormalization")  # the embedding Gathers live inside it
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" warning: not applicable to dynamic
        try:
            # DefaultTensorType: shape inference cannot type the outputs of contrib ops (fused graph)
            quantize_dynamic(str(fp32_path), str(tmp), weight_type=weight_type,
                             op_types_to_quantize=op_types, per_channel=quant.per_channel,
                             nodes_to_exclude=exclude, extra_options={"DefaultTensorType": 1})  # FLOAT
        finally:
            root.setLevel(level)
    os.replace(tmp, int8_path)
    return op_types


def _mixture_matmuls(model) -> list[str]:
    """Names of the MatMuls that multiply a Softmax output by a constant: a mixture head's
    P(category) @ M (textrouter.head). They stay fp32: dynamic int8 scales an activation per batch
    tensor, so a quantised P @ M made the static engine's probabilities depend on the batch (up to
    0.007), and M [K, A] is a few hundred floats, so int8 saves nothing there."""
    model = _graph(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants
            and getattr(producer.get(n.input[0]), "op_type", None) == "Softmax"]


def _ffn_output_matmuls(model) -> list[str]:
    """Names of the MatMuls fed by the GELU of each feed-forward block (BERT `output.dense`);
    `model`: a path or a loaded graph."""
    model = _graph(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        src = producer.get(node.input[0])
        # exported GELU(erf) ends in Mul(Mul(x, 0.5), Add(Erf(x / sqrt 2), 1)) or Mul(x, ...) * 0.5
        if src is not None and src.op_type in ("Mul", "Gelu", "FastGelu", "BiasGelu") and (
                "intermediate_act_fn" in src.name or src.op_type != "Mul"):
            names.append(node.name)
    return names


def _quantize_blockwise(src: Path, dst: Path, block_size: int) -> None:
    """MatMul weights -> MatMulNBits (8 bit, blocks), big embedding tables -> int8 rows + scales."""
    import logging

    import onnx

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:  # needs the onnx-ir package (export only, not routing)
        raise RouterError(f"blockwise int8 export needs {exc.name or 'onnx-ir'}: pip install onnx-ir "
                          "(or export with --quant dynamic)") from None
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.WARNING)  # it logs one INFO line per graph node
    try:
        q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=block_size, is_symmetric=True,
                                 accuracy_level=4, op_types_to_quantize=("MatMul",))
        q.process()
    finally:
        logger.setLevel(level)
    model = q.model.model
    _quantize_embeddings(model)
    onnx.save(model, str(dst))


def _quantize_embeddings(model) -> int:
    """Gather(W float [V, H], ids) -> Gather(Wq int8, ids) * Gather(scale [V, 1], ids), per row.

    One symmetric scale per vocabulary row keeps each token's vector accurate to 1/254 of its own
    largest entry (a single scale for the whole table loses the small rows). Returns tables changed.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    new_nodes, changed = [], 0
    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (table is None or axis != 0 or table.data_type != TensorProto.FLOAT or len(table.dims) != 2
                or table.dims[0] * table.dims[1] < EMBEDDING_MIN_ELEMENTS or consumers[table.name] != 1):
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(table).astype(np.float32)
        scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0
        wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        base = table.name
        model.graph.initializer.remove(table)
        model.graph.initializer.extend([numpy_helper.from_array(wq, base + "_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), base + "_scale")])
        ids, out = node.input[1], node.output[0]
        new_nodes += [
            helper.make_node("Gather", [base + "_int8", ids], [out + "_q"], name=node.name + "_q", axis=0),
            helper.make_node("Cast", [out + "_q"], [out + "_qf"], name=node.name + "_cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [base + "_scale", ids], [out + "_s"], name=node.name + "_scale", axis=0),
            helper.make_node("Mul", [out + "_qf", out + "_s"], [out], name=node.name + "_dequant"),
        ]
        changed += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return changed
