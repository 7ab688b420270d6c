"""Export a causal-lm router (textrouter.causal_lm) to a router folder that routes torch-free.

The ONNX graph is `causal_scorer.ActionScorer` traced: it takes the router text's token ids with the
runtime's usual signature (input_ids, attention_mask int64 [batch, seq], right-padded) and returns
`logits` float32 [batch, actions] = each action's log-probability under the export's `score`
(textrouter.causal_scorer.SCORES; default "decision": the completion's tokens up to where it
differs from every other action). The prompt's constant prefix (chat template + routing
instruction) and suffix (assistant header), and the actions' scored tokens (as a trie), are
constants inside the graph, so `textrouter.runtime` routes it unchanged: softmax over the actions'
log-probs, argmax = the torch policy's choice. One forward pass covers the prompt and all actions
(a tree attention mask), not one pass per action.

Folder: router.json (`engine: causal-lm`, plus `causal_lm`: prompt, score, score_definition), tokenizer.json
(the base's fast tokenizer, post-processor off: no BOS/EOS added at route time), model.onnx (fp32)
and model.int8.onnx (dynamic int8 MatMul weights) when int8 keeps >= MIN_INT8_AGREEMENT of the
fp32 actions on the check questions; otherwise the folder ships fp32 only and router.json
`metrics.int8` says why. Checks (on the runtime's own token ids): fp32 ONNX vs torch scorer action
agreement and max |dp|, int8 vs torch agreement.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from textrouter.causal_scorer import DEFAULT_SCORE, SCORES, check_score
from textrouter.errors import RouterError

OPSET = 17
MIN_AGREEMENT = 0.99       # fp32 ONNX vs torch policy, share of check questions with the same action
MIN_INT8_AGREEMENT = 0.99  # int8 vs torch policy
MAX_FP32_DIFF = 1e-3       # max |p_onnx - p_torch| (softmax over actions); sums of <= ~15 fp32 log-probs
CHECK_BATCH = 8


def _export_onnx(scorer, path: Path, n_actions: int) -> None:
    import warnings

    import torch

    from textrouter.folder import INPUT_NAMES, OUTPUT_NAME

    ids = torch.tensor([[11, 12, 13, 14, 0, 0], [15, 16, 17, 18, 19, 20]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.long)
    tmp = path.with_name(path.name + ".tmp")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python conditionals in mask code
        torch.onnx.export(scorer, (ids, mask), str(tmp), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    import onnx

    model = onnx.load(str(tmp))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 2:
        raise RouterError(f"exported scorer has rank-{len(dims)} output, expected [batch, actions] (a bug)")
    dims[1].Clear()
    dims[1].dim_value = n_actions  # the loader checks the width
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul weights only: the (tied) embedding Gather stays fp32; per-tensor int8 weights,
    # activations quantised per call (dynamic)
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a "consider pre-processing" warning on the root logger
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)


def _onnx_logprobs(path: Path, batches, threads: int = 1):
    import numpy as np

    from textrouter.folder import open_session

    sess = open_session(path, threads=threads)
    return np.concatenate([sess.run(None, {"input_ids": i, "attention_mask": m})[0].astype(np.float64)
                           for i, m in batches])


def _softmax(logits):
    from textrouter.head import softmax

    return softmax(logits)


def export_causal(model, tokenizer, prompt, out_dir: str | os.PathLike, check_texts: Sequence[str],
                  meta: Mapping[str, Any] | None = None, max_length: int = 128, int8: bool = True,
                  say: Callable[[str], None] | None = None, score: str = DEFAULT_SCORE) -> dict:
    """Write a causal-lm router folder; returns its router.json dict. RouterError when a check fails
    (then no router.json is written: the folder does not load); ValueError for an unknown score."""
    import numpy as np
    import torch

    from textrouter.causal_lm import ENGINE
    from textrouter.causal_scorer import build_scorer, encode_router_texts, runtime_tokenizer
    from textrouter.folder import MODEL_FILES, ROUTER_JSON, TOKENIZER_FILE, write_router_json

    check_score(score)
    say = say or (lambda s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / ROUTER_JSON).exists():
        (out / ROUTER_JSON).unlink()  # a half-rewritten folder must not load
    model = model.eval()
    model.set_attn_implementation("eager")  # the 4-D additive tree mask, traced as plain ops
    scorer = build_scorer(model, tokenizer, prompt, score).eval()
    actions = list(prompt.actions)
    t0 = time.perf_counter()
    say("exporting fp32 ONNX")
    _export_onnx(scorer, out / MODEL_FILES["fp32"], len(actions))
    runtime_tokenizer(tokenizer).save(str(out / TOKENIZER_FILE))
    # checks on the runtime's own token ids
    ids, mask = encode_router_texts(tokenizer, list(check_texts), max_length)
    batches = [(ids[i:i + CHECK_BATCH], mask[i:i + CHECK_BATCH]) for i in range(0, len(ids), CHECK_BATCH)]
    batches = [(i[:, :int(m.sum(1).max())], m[:, :int(m.sum(1).max())]) for i, m in batches]  # pad per batch
    say(f"torch policy on {len(ids)} check questions")
    with torch.no_grad():
        lp_torch = np.concatenate([scorer(torch.from_numpy(i), torch.from_numpy(m)).double().numpy()
                                   for i, m in batches])
    say("fp32 ONNX on the check questions")
    lp_fp32 = _onnx_logprobs(out / MODEL_FILES["fp32"], batches)
    a_torch = lp_torch.argmax(1)
    metrics: dict[str, Any] = {
        "check_questions": len(ids),
        "fp32_agreement": float((lp_fp32.argmax(1) == a_torch).mean()),
        "fp32_max_abs_prob_diff": float(np.abs(_softmax(lp_fp32) - _softmax(lp_torch)).max()),
        "torch_action_counts": {a: int((a_torch == k).sum()) for k, a in enumerate(actions)},
    }
    if metrics["fp32_agreement"] < MIN_AGREEMENT or metrics["fp32_max_abs_prob_diff"] > MAX_FP32_DIFF:
        raise RouterError(f"fp32 ONNX disagrees with the torch policy (agreement {metrics['fp32_agreement']:.3f}, "
                          f"max |dp| {metrics['fp32_max_abs_prob_diff']:.2e}); this is an export bug: report it "
                          "with the checkpoint")
    files = [TOKENIZER_FILE, MODEL_FILES["fp32"]]
    if int8:
        say("int8 quantisation + agreement check")
        _quantize(out / MODEL_FILES["fp32"], out / MODEL_FILES["int8"])
        lp_int8 = _onnx_logprobs(out / MODEL_FILES["int8"], batches)
        agree = float((lp_int8.argmax(1) == a_torch).mean())
        metrics["int8"] = {"agreement_with_torch": agree, "max_abs_prob_diff":
                           float(np.abs(_softmax(lp_int8) - _softmax(lp_torch)).max()),
                           "shipped": agree >= MIN_INT8_AGREEMENT}
        if agree >= MIN_INT8_AGREEMENT:
            files.append(MODEL_FILES["int8"])
        else:
            metrics["int8"]["reason"] = (f"int8 keeps {agree:.3f} < {MIN_INT8_AGREEMENT} of the torch actions: "
                                         "fp32 only; load with precision='fp32'")
            (out / MODEL_FILES["int8"]).unlink()
    metrics["export_s"] = round(time.perf_counter() - t0, 1)
    meta = dict(meta or {})
    doc = {"format_version": 1, "actions": actions, "direct_action": actions[0],
           "column_mapping": meta.pop("column_mapping", {}), "encoder": meta.pop("base", None),
           "engine": ENGINE, "max_length": int(max_length), "metrics": metrics,
           "causal_lm": {"prompt": prompt.to_dict(), "score": score, "score_definition": SCORES[score]},
           **meta}
    return write_router_json(out, doc, files=files)


def export_checkpoint(ckpt: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      check_table: str | os.PathLike | None = None, int8: bool = True,
                      say: Callable[[str], None] | None = None, score: str = DEFAULT_SCORE) -> dict:
    """A causal-lm checkpoint folder (textrouter.causal_lm.save_checkpoint) -> router folder."""
    from textrouter.causal_lm import load_checkpoint
    from textrouter.export import read_check_texts

    check_score(score)  # before the ~20 s model load
    model, tok, prompt, meta = load_checkpoint(ckpt)
    texts, _, _ = read_check_texts(check_table)
    out = Path(out_dir) if out_dir is not None else Path(ckpt) / "router"
    keep = {k: meta[k] for k in ("column_mapping", "base", "table", "reward") if k in meta}
    try:
        return export_causal(model, tok, prompt, out, texts, keep,
                             max_length=int(meta.get("options", {}).get("max_length", 128)), int8=int8, say=say,
                             score=score)
    except BaseException:
        if out.exists() and not (out / "router.json").exists() and out_dir is None:
            shutil.rmtree(out, ignore_errors=True)
        raise
