"""Export a trained router checkpoint to an ONNX router folder (fp32 + dynamic int8), with checks.

`audiorouter export CKPT [--out OUT]` (default OUT = CKPT/router) does:

1. load the checkpoint (`textrouter.model.load_checkpoint`: LoRA already merged, eval mode);
2. `torch.onnx.export(dynamo=False)` -> model.onnx: input_ids, attention_mask int64 [batch, seq]
   (both axes dynamic) -> logits float32 [batch, actions], opset 17;
   then (ExportOptions.optimize, default on) onnxruntime's transformer optimizer fuses the BERT
   subgraphs (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu) in place;
3. `onnxruntime.quantization.quantize_dynamic` -> model.int8.onnx (int8 weights, activations
   quantised on the fly per call; on the fused graph also QAttention / QEmbedLayerNormalization);
4. tokenizer.json copied with truncation at max_length and dynamic (batch-longest) padding;
5. checks on the check questions (default: the bundled 499-question dev table), on identical
   token ids: fp32 ONNX vs torch max |dp| (must be < 1e-4) and int8 vs fp32 argmax agreement
   (must be >= 0.99); the figures go into router.json `metrics`; a failed check raises RouterError
   and leaves no router.json (the folder does not load);
6. router.json written last, atomically, with every file's sha256.

torch/onnx/onnxruntime.quantization are imported inside functions (the `[train]` extra).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from textrouter.errors import RouterError, TableError
from textrouter.folder import (INPUT_NAMES, INPUT_TEMPLATE, MODEL_FILES, OUTPUT_NAME, ROUTER_JSON,
                               TOKENIZER_FILE, atomic_write_text, sha256_file, write_router_json)
from textrouter.text import format_input

DEV_TABLE = Path(__file__).resolve().parent / "data" / "mmau-mini-outcomes-dev.jsonl"
OPSET = 17
MAX_FP32_DIFF = 1e-4       # max |p_onnx - p_torch| over all check questions and actions
MIN_INT8_AGREEMENT = 0.99  # share of check questions where int8 and fp32 pick the same action
CHECK_BATCH = 32           # questions per forward pass during the checks

# "auto" tries these in order and keeps the first that passes the int8-vs-fp32 agreement check.
QUANT_LADDER = ("dynamic", "dynamic-ffn2-fp32", "blockwise")
QUANT_METHODS = ("auto", *QUANT_LADDER)
WEIGHT_TYPES = ("qint8", "quint8")
QUANT_OP_SETS = {"matmul": ("MatMul",), "matmul+gather": ("MatMul", "Gather")}
EMBEDDING_MIN_ELEMENTS = 1_000_000  # only big lookup tables (the 30522x384 word embeddings)


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
                "fp32_nodes": "FFN output MatMuls" if method == "dynamic-ffn2-fp32" else "none"}


@dataclass(frozen=True)
class ExportOptions:
    int8: bool = True                 # write model.int8.onnx
    fp32: bool = True                 # keep model.onnx in the folder (always built for the checks)
    quant: QuantOptions = field(default_factory=QuantOptions)
    check_table: str | None = None    # questions for the checks; None = the bundled dev table
    # Fuse BERT subgraphs with onnxruntime.transformers.optimizer before int8 (measured on the
    # default router: dynamic int8 of the fused graph keeps 497/499 actions vs 494/499 unfused,
    # so `auto` stops at the fast `dynamic` method; see docs/router-runtime.md). False = plain export.
    optimize: bool = True
    max_fp32_diff: float = MAX_FP32_DIFF
    min_int8_agreement: float = MIN_INT8_AGREEMENT

    def __post_init__(self) -> None:
        if not (self.int8 or self.fp32):
            raise ValueError("export needs at least one model: keep --int8 or --fp32")


# ---------------------------------------------------------------------------------------------
# check questions


def read_check_texts(path: str | os.PathLike | None = None) -> tuple[list[str], str, str]:
    """(router input texts, table sha256, table name) of a JSONL / JSON-list table of questions."""
    path = Path(path) if path is not None else DEV_TABLE
    if not path.is_file():
        raise TableError(f"check table {path} does not exist; pass a JSONL outcome table with --check-table")
    raw = path.read_text(encoding="utf-8")
    try:
        if raw.lstrip().startswith("["):
            rows = json.loads(raw)
        else:
            rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise TableError(f"check table {path} is not valid JSON/JSONL ({exc}); fix the file or pass another "
                         "with --check-table") from None
    texts = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise TableError(f"check table {path} row {i} has no question; every row needs a 'question'")
        texts.append(format_input(row["question"], row.get("choices")))
    if not texts:
        raise TableError(f"check table {path} is empty; pass a table with at least one question")
    return texts, sha256_file(path), path.name


def _encode_batches(tokenizer, texts: Sequence[str], batch: int = CHECK_BATCH):
    """Yield (input_ids, attention_mask) int64 numpy arrays, padded to each batch's longest."""
    import numpy as np

    for start in range(0, len(texts), batch):
        encs = tokenizer.encode_batch(list(texts[start:start + batch]))
        yield (np.array([e.ids for e in encs], dtype=np.int64),
               np.array([e.attention_mask for e in encs], dtype=np.int64))


def _softmax(x):
    import numpy as np

    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def torch_probs(policy, batches) -> Any:
    import numpy as np
    import torch

    out = []
    with torch.inference_mode():
        for ids, mask in batches:
            logits = policy(torch.from_numpy(ids), torch.from_numpy(mask))
            out.append(_softmax(logits.double().numpy()))
    return np.concatenate(out)


def onnx_probs(model_path: Path, batches, threads: int | None = None) -> Any:
    import numpy as np

    from textrouter.folder import open_session

    sess = open_session(model_path, threads=threads)
    out = []
    for ids, mask in batches:
        (logits,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        out.append(_softmax(logits.astype(np.float64)))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# the steps


def export_fp32(policy, path: Path, n_actions: int) -> None:
    """torch.onnx.export (TorchScript exporter, dynamo=False) with dynamic batch and sequence axes."""
    import torch

    policy.eval()
    # A policy may provide an export form of the same function (minilm-static folds its head into
    # the token table); the checks below compare the ONNX file against the policy itself.
    policy = policy.onnx_module().eval() if hasattr(policy, "onnx_module") else policy
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 2054, 2003, 2023, 1029, 102]], dtype=torch.long)
    mask = (ids != 0).long()
    tmp = path.with_name(path.name + ".tmp")
    import warnings

    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns about Python-bool conversions in transformers' mask code (the padding
        # branch is never taken: mask length == sequence length) and about deprecations: noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(policy, (ids, mask), str(tmp), input_names=list(INPUT_NAMES),
                          output_names=[OUTPUT_NAME],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "attention_mask": {0: "batch", 1: "seq"},
                                        OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    _fix_output_width(tmp, n_actions)
    os.replace(tmp, path)


def _fix_output_width(path: Path, n_actions: int) -> None:
    """Make the logits output shape [batch, n_actions] explicit (the loader checks the width)."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 2:
        raise RouterError(f"exported logits have rank {len(dims)}, expected 2 (a bug in the policy's forward)")
    if dims[1].HasField("dim_param") or dims[1].dim_value != n_actions:
        dims[1].Clear()
        dims[1].dim_value = n_actions
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def optimize_fp32(path: Path, policy=None) -> dict:
    """Fuse the BERT subgraphs of an fp32 ONNX file in place (onnxruntime transformer optimizer).

    opt_level 0: only the portable Python fusions (contrib ops EmbedLayerNormalization, Attention,
    SkipLayerNormalization, BiasGelu), no CPU-specific session rewrites baked into the file.
    num_heads / hidden_size come from the policy's encoder config (0 = let the optimizer detect).
    Returns {fused op: count} for router.json metrics.
    """
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(getattr(policy, "encoder", None), "config", None)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its modules (fusion_*, onnx_model) log per fusion pass
    try:
        model = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden,
                               opt_level=0, use_gpu=False)
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        tmp = path.with_name(path.name + ".opt.tmp")
        model.save_model_to_file(str(tmp))
    finally:
        logging.disable(previous)
    os.replace(tmp, path)
    return {"tool": "onnxruntime.transformers.optimizer", "model_type": "bert", "opt_level": 0,
            "num_heads": heads, "hidden_size": hidden, "fused_ops": fused}


def _fused_op_types(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.op_type for n in model.graph.node} & {"Attention", "EmbedLayerNormalization"}


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

        exclude = _ffn_output_matmuls(fp32_path) if method == "dynamic-ffn2-fp32" else []
        weight_type = QuantType.QInt8 if quant.weight_type == "qint8" else QuantType.QUInt8
        op_types = list(QUANT_OP_SETS[quant.ops])
        fused = _fused_op_types(fp32_path)  # a graph fused by optimize_fp32
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


def _ffn_output_matmuls(path: Path) -> list[str]:
    """Names of the MatMuls fed by the GELU of each feed-forward block (BERT `output.dense`)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
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


def write_tokenizer(src: Path, dst: Path, max_length: int) -> None:
    """Copy the encoder's tokenizer with truncation = max_length and batch-longest padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")  # length None = longest
    atomic_write_text(dst, tok.to_str())


def _table_info(meta: Mapping[str, Any]) -> dict:
    """Normalise the checkpoint's training-table fields into {sha256, name, n_rows}."""
    table = dict(meta.get("table") or {}) if isinstance(meta.get("table"), dict) else {}
    for src, dst in (("table_sha256", "sha256"), ("table_name", "name"), ("table_path", "name"),
                     ("table_rows", "n_rows"), ("n_rows", "n_rows"), ("table_n_rows", "n_rows")):
        if src in meta and dst not in table:
            table[dst] = Path(meta[src]).name if src == "table_path" else meta[src]
    return table


def router_meta(ckpt_meta: Mapping[str, Any], max_length: int) -> dict:
    """router.json fields carried over from a checkpoint's meta (files/metrics added later)."""
    actions = list(ckpt_meta["actions"])
    keep = {k: ckpt_meta[k] for k in ("seed", "mode", "group", "epochs") if k in ckpt_meta}
    return {
        "actions": actions,
        "direct_action": ckpt_meta.get("direct_action", actions[0]),
        "column_mapping": ckpt_meta.get("column_mapping", {}),
        "encoder": ckpt_meta.get("encoder", "sentence-transformers/all-MiniLM-L6-v2"),
        "engine": ckpt_meta.get("engine", "minilm"),
        "max_length": int(max_length),
        "input_template": INPUT_TEMPLATE,
        "reward": ckpt_meta.get("reward", ckpt_meta.get("reward_config")),
        "table": _table_info(ckpt_meta),
        "training": {**keep, "metrics": ckpt_meta.get("metrics", ckpt_meta.get("train_metrics"))},
    }


def export_policy(policy, ckpt_meta: Mapping[str, Any], tokenizer_src: str | os.PathLike,
                  out_dir: str | os.PathLike, options: ExportOptions = ExportOptions(),
                  progress: Callable[[str], None] | None = None) -> dict:
    """Write a complete router folder for an in-memory policy; return the router.json dict."""
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ROUTER_JSON).unlink(missing_ok=True)  # until the checks pass the folder must not load
    actions = list(ckpt_meta["actions"])
    if not actions or actions[0] != "direct":
        raise RouterError(f"checkpoint actions {actions} must start with 'direct'; retrain with "
                          "`audiorouter train` (action 0 is always direct)")
    max_length = int(ckpt_meta.get("max_length", 128))
    texts, check_sha, check_name = read_check_texts(options.check_table)
    t_start = time.perf_counter()

    write_tokenizer(Path(tokenizer_src), out / TOKENIZER_FILE, max_length)
    from textrouter.folder import load_tokenizer

    tokenizer = load_tokenizer(out, max_length)
    batches = list(_encode_batches(tokenizer, texts))

    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        fp32_path = (out if options.fp32 else Path(tmp)) / MODEL_FILES["fp32"]
        say("exporting fp32 ONNX")
        export_fp32(policy, fp32_path, len(actions))
        graph_opt: dict[str, Any] = {"applied": False}
        if options.optimize and hasattr(policy, "encoder"):  # BERT fusion: transformer policies only
            say("fusing the BERT graph (onnxruntime transformer optimizer)")
            graph_opt = {"applied": True, **optimize_fp32(fp32_path, policy)}
        say(f"checking fp32 ONNX against torch on {len(texts)} questions")
        p_torch = torch_probs(policy, batches)
        p_fp32 = onnx_probs(fp32_path, batches)
        fp32_diff = float(abs(p_fp32 - p_torch).max())
        metrics: dict[str, Any] = {
            "check_table": {"name": check_name, "sha256": check_sha, "n_questions": len(texts)},
            "fp32_vs_torch_max_abs_diff": fp32_diff,
            "fp32_vs_torch_agreement": float((p_fp32.argmax(1) == p_torch.argmax(1)).mean()),
            "torch_action_share": {a: float((p_torch.argmax(1) == i).mean()) for i, a in enumerate(actions)},
            "fp32_bytes": fp32_path.stat().st_size,
            "graph_optimization": graph_opt,
        }
        if fp32_diff >= options.max_fp32_diff:
            hint = " or export without graph fusion (ExportOptions(optimize=False))" if options.optimize else ""
            raise RouterError(f"fp32 ONNX differs from torch by {fp32_diff:.2e} (limit {options.max_fp32_diff:g}) "
                              f"on the check questions; the export is wrong: report it with the checkpoint{hint}")
        if options.int8:
            int8_path = out / MODEL_FILES["int8"]
            attempts = []
            for method in options.quant.ladder:
                say(f"quantising to int8 ({method}) and checking against fp32")
                op_types = quantize_int8(fp32_path, int8_path, options.quant, method)
                p_int8 = onnx_probs(int8_path, batches)
                agreement = float((p_int8.argmax(1) == p_fp32.argmax(1)).mean())
                same = int((p_int8.argmax(1) == p_fp32.argmax(1)).sum())
                attempts.append({"method": method, "agreement": agreement, "same_action": same,
                                 "n_questions": len(texts), "bytes": int8_path.stat().st_size})
                if agreement >= options.min_int8_agreement:
                    break
            metrics.update({
                "int8_vs_fp32_agreement": agreement,
                "int8_vs_fp32_max_abs_diff": float(abs(p_int8 - p_fp32).max()),
                "int8_bytes": int8_path.stat().st_size,
                "quantization": {**options.quant.describe(method),
                                 **({"op_types": op_types} if method != "blockwise" else {})},
                "quantization_attempts": attempts,
            })
            if agreement < options.min_int8_agreement:
                int8_path.unlink(missing_ok=True)
                tried = ", ".join(f"{a['method']} {a['same_action']}/{a['n_questions']}" for a in attempts)
                raise RouterError(f"int8 picks the same action as fp32 on too few check questions ({tried}; "
                                  f"need {options.min_int8_agreement:.0%}); export with --no-int8 (fp32 only) "
                                  "or another --quant method (see docs/router-runtime.md)")
        else:
            (out / MODEL_FILES["int8"]).unlink(missing_ok=True)
        if not options.fp32:
            (out / MODEL_FILES["fp32"]).unlink(missing_ok=True)
    metrics["export_seconds"] = round(time.perf_counter() - t_start, 2)

    doc = router_meta(ckpt_meta, max_length)
    doc["metrics"] = metrics
    files = [TOKENIZER_FILE] + [MODEL_FILES[p] for p, keep in (("fp32", options.fp32), ("int8", options.int8))
                                if keep]
    return write_router_json(out, doc, files=files)


def export_checkpoint(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      options: ExportOptions = ExportOptions(),
                      progress: Callable[[str], None] | None = None) -> tuple[Path, dict]:
    """Checkpoint folder (textrouter.model.save_checkpoint) -> router folder. Returns (out, router.json)."""
    from textrouter.model import CHECKPOINT_TOKENIZER, load_checkpoint, tokenizer_path

    ckpt = Path(ckpt_dir)
    out = Path(out_dir) if out_dir is not None else ckpt / "router"
    if out.resolve() == ckpt.resolve():
        raise RouterError(f"--out {out} is the checkpoint folder itself; pick another folder (default: {ckpt}/router)")
    if progress is not None:
        progress("loading checkpoint")
    policy, meta = load_checkpoint(ckpt)
    tok = ckpt / CHECKPOINT_TOKENIZER
    doc = export_policy(policy, meta, tok if tok.is_file() else tokenizer_path(), out, options, progress)
    return out, doc


def copy_router(src: str | os.PathLike, dst: str | os.PathLike, precisions: Sequence[str] = ("int8",)) -> dict:
    """Copy a router folder keeping only some precisions; router.json rewritten with new hashes."""
    src, dst = Path(src), Path(dst)
    meta = json.loads((src / ROUTER_JSON).read_text(encoding="utf-8"))
    dst.mkdir(parents=True, exist_ok=True)
    (dst / ROUTER_JSON).unlink(missing_ok=True)
    names = [TOKENIZER_FILE] + [MODEL_FILES[p] for p in precisions]
    for name in names:
        shutil.copyfile(src / name, dst / (name + ".tmp"))
        os.replace(dst / (name + ".tmp"), dst / name)
    for p, name in MODEL_FILES.items():
        if p not in precisions:
            (dst / name).unlink(missing_ok=True)
    meta.pop("files", None)
    return write_router_json(dst, meta, files=names)
