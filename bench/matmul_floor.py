"""The weight-MatMul floor of an exported router graph: its weight matrix products alone, timed.

A router's forward cannot be faster than the products of its weight matrices with the rows it runs
(everything else -- attention over the cache, norms, shape ops -- comes on top). `weight_matmuls`
reads those products from a router's fp32 ONNX file (every MatMul whose right operand is a 2-D
initializer); `floor_model` writes a graph of only those MatMuls, each fed from a random input of
its K dimension (timing does not depend on the values), optionally with the products that share an
input fused into one (q/k/v, gate/up: what an exporter could concatenate); `floor_ms` times it on
1 thread, int8 exactly as `textrouter.causal_export` quantises (onnxruntime quantize_dynamic, QInt8,
MatMul only). Used by `bench_causal_route.py --floor`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightMatMul:
    """One product of the graph: activations [rows, k] (input `source`) times a [k, n] weight."""

    source: str
    k: int
    n: int


def weight_matmuls(onnx_path: str | Path) -> list[WeightMatMul]:
    """The MatMuls of `onnx_path` whose weight is a 2-D initializer, in graph order (weights not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(dims.get(node.input[1], ())) == 2:
            k, n = dims[node.input[1]]
            out.append(WeightMatMul(node.input[0], int(k), int(n)))
    return out


def floor_model(mms: list[WeightMatMul], path: str | Path, fused: bool, int8: bool, big_n: int) -> Path:
    """Write the MatMul-only graph (fp32, or int8 via quantize_dynamic). Inputs: `x{k}` [rows, k] for
    each K; products with n >= big_n (the LM head over the vocabulary) read `head{k}` [head_rows, k]
    instead, since the router runs only its scored positions through the head."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    groups: dict[tuple, list[WeightMatMul]] = {}
    for i, m in enumerate(mms):
        head = m.n >= big_n
        key = (m.source, head) if fused else (i, head)  # fused: one product per shared input
        groups.setdefault(key, []).append(m)
    rng = np.random.default_rng(0)
    nodes, inits, outputs, inputs = [], [], [], {}
    for g, ((_, head), members) in enumerate(groups.items()):
        k = members[0].k
        name = f"head{k}" if head else f"x{k}"
        inputs.setdefault(name, helper.make_tensor_value_info(name, TensorProto.FLOAT, ["head_rows" if head else "rows", k]))
        w = (rng.standard_normal((k, sum(m.n for m in members))) * 0.02).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{g}"))
        nodes.append(helper.make_node("MatMul", [name, f"w{g}"], [f"y{g}"]))
        outputs.append(helper.make_tensor_value_info(f"y{g}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "weight_matmul_floor", list(inputs.values()), outputs, inits)
    path = Path(path)
    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    if not int8:
        return fp32
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" warning
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)
    return path


def floor_ms(model_path: str | Path, rows: int, head_rows: int, repeats: int = 15) -> float:
    """p50 ms of one run of the floor graph on 1 thread (3 warm-up runs first)."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feed = {}
    for i in sess.get_inputs():
        r = head_rows if i.name.startswith("head") else rows
        feed[i.name] = rng.standard_normal((r, i.shape[1])).astype(np.float32)
    ts = []
    for j in range(repeats + 3):
        t0 = time.perf_counter()
        sess.run(None, feed)
        if j >= 3:
            ts.append(1000 * (time.perf_counter() - t0))
    return float(statistics.median(ts))
