"""Export a trained router checkpoint to an ONNX router folder (fp32 + dynamic int8), with checks.

`audiorouter export CKPT [--out OUT]` (default OUT = CKPT/router) does:

0. refuse before anything is written: actions not starting with direct, a meta.json whose
   router.json would not load (textrouter.folder.check_meta), NaN/inf weights (quantisation would
   otherwise die in `AssertionError: scale issue`), a bad check table;
1. load the checkpoint (`textrouter.checkpoint.load_checkpoint`: LoRA already merged, eval mode);
2. `torch.onnx.export(dynamo=False)` -> model.onnx: input_ids, attention_mask int64 [batch, seq]
   (both axes dynamic) -> logits float32 [batch, actions], opset 17;
   then (ExportOptions.optimize, default on) onnxruntime's transformer optimizer fuses the BERT
   subgraphs (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu) in place;
3. `onnxruntime.quantization.quantize_dynamic` -> model.int8.onnx (int8 weights, activations
   quantised on the fly per call; on the fused graph also QAttention / QEmbedLayerNormalization);
4. tokenizer.json copied with truncation at max_length and dynamic (batch-longest) padding;
5. checks on the check questions (default: the bundled 499-question dev table), on identical
   token ids: fp32 ONNX vs torch max |dp| (must be < 1e-4) and int8 vs fp32 argmax agreement
   (must be >= 0.99); the figures go into router.json `metrics`, with `quantization.reason` (why
   this int8 method); a failed check raises RouterError and leaves no router.json (and no folder,
   if the export created it). The onnxruntime checks run on CHECK_THREADS = 1 thread, so the
   method `auto` keeps, and the int8 file, are the same on every run on one machine;
6. router.json written last, atomically, with every file's sha256 and the truncation policy.

`progress` receives one StageMessage per stage (step/total; the CLI draws a rich bar).
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

from textrouter.errors import RouterError, RouterLoadError, TableError
from textrouter.folder import (FORMAT_VERSION, INPUT_NAMES, INPUT_TEMPLATE, MODEL_FILES, OUTPUT_NAME,
                               ROUTER_JSON, TOKENIZER_FILE, atomic_write_text, check_meta, sha256_file,
                               write_router_json)
from textrouter.quantize import (EMBEDDING_MIN_ELEMENTS, QUANT_LADDER, QUANT_METHODS,  # noqa: F401
                                 QUANT_OP_SETS, WEIGHT_TYPES, QuantOptions, _ffn_output_matmuls,
                                 _quantize_embeddings, quantize_int8)
from textrouter.text import format_input

DEV_TABLE = Path(__file__).resolve().parent / "data" / "mmau-mini-outcomes-dev.jsonl"
OPSET = 17
MAX_FP32_DIFF = 1e-4       # max |p_onnx - p_torch| over all check questions and actions
MIN_INT8_AGREEMENT = 0.99  # share of check questions where int8 and fp32 pick the same action
CHECK_BATCH = 32           # questions per forward pass during the checks
# onnxruntime threads for the checks: 1 makes every sum run in one order, so int8-vs-fp32
# agreement (and with it the method `auto` keeps, i.e. the int8 file) is the same on every run.
CHECK_THREADS = 1

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


def _softmax(logits):
    from textrouter.head import softmax

    return softmax(logits)


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
    from textrouter.text import Truncation

    actions = list(ckpt_meta["actions"])
    keep = {k: ckpt_meta[k] for k in ("seed", "mode", "group", "epochs") if k in ckpt_meta}
    doc = {
        "actions": actions,
        # logit 0 is the direct action by construction (older checkpoints stored the direct
        # *column* here, e.g. qwen2_audio_direct; column_mapping carries that)
        "direct_action": actions[0],
        "column_mapping": ckpt_meta.get("column_mapping", {}),
        "encoder": ckpt_meta.get("encoder", "sentence-transformers/all-MiniLM-L6-v2"),
        "engine": ckpt_meta.get("engine", "minilm"),
        "max_length": int(max_length),
        "input_template": INPUT_TEMPLATE,
        # the policy the runtime applies to long inputs (textrouter.text); training features use it too
        "truncation": Truncation.from_meta(ckpt_meta.get("truncation")).to_dict(),
        "reward": ckpt_meta.get("reward", ckpt_meta.get("reward_config")),
        "table": _table_info(ckpt_meta),
        "training": {**keep, "metrics": ckpt_meta.get("metrics", ckpt_meta.get("train_metrics"))},
    }
    # textrouter.decision's fitted rule and textrouter.selection's choice travel with the router
    for extra in ("decision", "selection", "recipe", "head"):
        if extra in ckpt_meta:
            doc[extra] = ckpt_meta[extra]
    return doc


class StageMessage(str):
    """A progress message that also says which export stage it is (`step` of `total`).

    A plain `str`, so a one-argument callback that prints it keeps working ("[2/5] ...")."""

    step: int
    total: int

    def __new__(cls, text: str, step: int, total: int):
        obj = super().__new__(cls, f"[{step}/{total}] {text}")
        obj.step, obj.total, obj.text = step, total, text
        return obj


def check_finite_weights(policy) -> None:
    """Refuse a policy with NaN/inf weights before any ONNX work (quantisation would crash on them
    with `AssertionError: scale issue`, and the checks compare NaN with NaN)."""
    import torch

    bad = []
    for name, tensor in policy.state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            n = int((~torch.isfinite(tensor)).sum())
            if n:
                bad.append((name, n))
    if bad:
        total = sum(n for _, n in bad)
        raise RouterError(f"the checkpoint has {total} non-finite weight value(s) (NaN/inf; first: {bad[0][0]}, "
                          f"{len(bad)} tensor(s)): training diverged; retrain (e.g. with a lower learning "
                          "rate) and export again (nothing was written)")


def _quant_reason(options: ExportOptions, attempts: Sequence[Mapping[str, Any]], chosen: str) -> str:
    """Why the int8 file is what it is, on one line (router.json metrics + the CLI summary)."""
    need = f"{options.min_int8_agreement:.0%}"
    tried = "; ".join(f"{a['method']} kept {a['same_action']}/{a['n_questions']}" for a in attempts)
    if options.quant.method != "auto":
        return f"--quant {chosen} requested ({tried} of the fp32 actions; need {need})"
    if len(attempts) == 1:
        return (f"auto: {chosen}, the first (fastest, smallest) method, kept the fp32 action on "
                f"{attempts[0]['same_action']}/{attempts[0]['n_questions']} check questions (need {need})")
    return f"auto: {tried}; {chosen} is the first to keep >= {need} of the fp32 actions"


def export_policy(policy, ckpt_meta: Mapping[str, Any], tokenizer_src: str | os.PathLike,
                  out_dir: str | os.PathLike, options: ExportOptions = ExportOptions(),
                  progress: Callable[[str], None] | None = None) -> dict:
    """Write a complete router folder for an in-memory policy; return the router.json dict.

    Refused before anything is written: actions not starting with direct, non-finite weights, a
    bad check table. A failure later leaves no router.json (the folder does not load) and removes
    the folder if this call created it. `progress` gets StageMessage strings, one per stage.
    All onnxruntime checks run on 1 thread, so the int8 method `auto` picks (and with it the file,
    byte for byte) is the same on every run on one machine.
    """
    out = Path(out_dir)
    actions = list(ckpt_meta["actions"])
    if not actions or actions[0] != "direct":
        raise RouterError(f"checkpoint actions {actions} must start with 'direct'; retrain with "
                          "`audiorouter train` (action 0 is always direct)")
    check_finite_weights(policy)
    max_length = int(ckpt_meta.get("max_length", 128))
    try:  # what router.json will say must load: refuse it now, not after the ONNX work
        check_meta({**router_meta(ckpt_meta, max_length), "format_version": FORMAT_VERSION, "files": {}},
                   "checkpoint meta")
    except RouterLoadError as exc:
        problem = str(exc).split("; ")[0]
        raise RouterError(f"{problem}; fix the checkpoint's meta.json or retrain with `audiorouter train`") from None
    texts, check_sha, check_name = read_check_texts(options.check_table)
    fuse = options.optimize and hasattr(policy, "encoder")  # BERT fusion: transformer policies only
    total = 4 + int(fuse) + int(options.int8)
    step = iter(range(1, total + 1))

    def say(text: str) -> None:
        if progress is not None:
            progress(StageMessage(text, next(step), total))

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    (out / ROUTER_JSON).unlink(missing_ok=True)  # until the checks pass the folder must not load
    try:
        return _export_into(policy, ckpt_meta, Path(tokenizer_src), out, options, say, actions, max_length,
                            texts, check_sha, check_name, fuse)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # no half folder left behind
        raise


def _export_into(policy, ckpt_meta, tokenizer_src: Path, out: Path, options: ExportOptions, say, actions,
                 max_length: int, texts, check_sha: str, check_name: str, fuse: bool) -> dict:
    t_start = time.perf_counter()
    say("writing tokenizer.json")
    write_tokenizer(tokenizer_src, out / TOKENIZER_FILE, max_length)
    from textrouter.folder import load_tokenizer

    tokenizer = load_tokenizer(out, max_length)
    batches = list(_encode_batches(tokenizer, texts))

    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        fp32_path = (out if options.fp32 else Path(tmp)) / MODEL_FILES["fp32"]
        say("exporting fp32 ONNX (torch.onnx.export)")
        export_fp32(policy, fp32_path, len(actions))
        graph_opt: dict[str, Any] = {"applied": False}
        if fuse:
            say("fusing the BERT graph (onnxruntime transformer optimizer)")
            graph_opt = {"applied": True, **optimize_fp32(fp32_path, policy)}
        say(f"checking fp32 ONNX against torch on {len(texts)} questions")
        p_torch = torch_probs(policy, batches)
        p_fp32 = onnx_probs(fp32_path, batches, threads=CHECK_THREADS)
        fp32_diff = float(abs(p_fp32 - p_torch).max())
        metrics: dict[str, Any] = {
            "check_table": {"name": check_name, "sha256": check_sha, "n_questions": len(texts)},
            "fp32_vs_torch_max_abs_diff": fp32_diff,
            "fp32_vs_torch_agreement": float((p_fp32.argmax(1) == p_torch.argmax(1)).mean()),
            "torch_action_share": {a: float((p_torch.argmax(1) == i).mean()) for i, a in enumerate(actions)},
            "fp32_bytes": fp32_path.stat().st_size,
            "graph_optimization": graph_opt,
        }
        if not fp32_diff < options.max_fp32_diff:  # also refuses NaN
            hint = " or export without graph fusion (ExportOptions(optimize=False))" if options.optimize else ""
            raise RouterError(f"fp32 ONNX differs from torch by {fp32_diff:.2e} (limit {options.max_fp32_diff:g}) "
                              f"on the check questions; the export is wrong: report it with the checkpoint{hint}")
        if options.int8:
            int8_path = out / MODEL_FILES["int8"]
            attempts = []
            ladder = options.quant.ladder
            say(f"quantising to int8 ({' -> '.join(ladder)}) and checking against fp32")
            for method in ladder:
                op_types = quantize_int8(fp32_path, int8_path, options.quant, method)
                p_int8 = onnx_probs(int8_path, batches, threads=CHECK_THREADS)
                agreement = float((p_int8.argmax(1) == p_fp32.argmax(1)).mean())
                same = int((p_int8.argmax(1) == p_fp32.argmax(1)).sum())
                attempts.append({"method": method, "agreement": agreement, "same_action": same,
                                 "n_questions": len(texts), "bytes": int8_path.stat().st_size,
                                 "sha256": sha256_file(int8_path)})
                if agreement >= options.min_int8_agreement:
                    break
            metrics.update({
                "int8_vs_fp32_agreement": agreement,
                "int8_vs_fp32_max_abs_diff": float(abs(p_int8 - p_fp32).max()),
                "int8_bytes": int8_path.stat().st_size,
                "quantization": {**options.quant.describe(method),
                                 **({"op_types": op_types} if method != "blockwise" else {}),
                                 "reason": _quant_reason(options, attempts, method)},
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

    say("writing router.json")
    doc = router_meta(ckpt_meta, max_length)
    doc["metrics"] = metrics
    files = [TOKENIZER_FILE] + [MODEL_FILES[p] for p, keep in (("fp32", options.fp32), ("int8", options.int8))
                                if keep]
    return write_router_json(out, doc, files=files)


def export_checkpoint(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      options: ExportOptions = ExportOptions(),
                      progress: Callable[[str], None] | None = None) -> tuple[Path, dict]:
    """Checkpoint folder (textrouter.model.save_checkpoint) -> router folder. Returns (out, router.json)."""
    from textrouter.checkpoint import load_checkpoint
    from textrouter.model import CHECKPOINT_TOKENIZER, tokenizer_path

    ckpt = Path(ckpt_dir)
    out = Path(out_dir) if out_dir is not None else ckpt / "router"
    if out.resolve() == ckpt.resolve():
        raise RouterError(f"--out {out} is the checkpoint folder itself; pick another folder (default: {ckpt}/router)")
    if progress is not None:
        progress("loading checkpoint")
    policy, meta = load_checkpoint(ckpt)  # non-finite weights are refused before out is touched
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
