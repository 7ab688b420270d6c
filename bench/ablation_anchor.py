#!/usr/bin/env python
"""Nested CV: does an "anchor" decision rule beat the default one?

The default rule (textrouter.decision) routes relative to `direct`: a tool is called when its
probability beats direct's by a fitted margin. On sets where a tool pipeline is the best single
action (set C: the R1-AQA-caption pipeline, 100% of the outer training splits), the router then
has to learn to call it nearly always. The anchor rule routes relative to the action with the
best accuracy on the training rows instead: another action is chosen only when its probability
beats the anchor's by a margin, fitted like the default one (the grid below, on the inner
out-of-fold probabilities of the candidate `train` selects; ties: the larger margin).

    python bench/ablation_anchor.py                 # sets A, B, C; seeds 0,1,2 x 5 outer folds
    python bench/ablation_anchor.py --sets C --json out.json

Prints held-out routed accuracy (mean ± sd over seeds x outer folds): default `train` (selected,
fitted margin), the anchor rule on the same heads, the best single action chosen on the training
rows, and how often the anchor rule leaves the anchor.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

ANCHOR_GRID = (-0.1, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0)  # 2.0 = never leave the anchor


def anchor_choose(probs: np.ndarray, anchor: int, margin: float) -> np.ndarray:
    """Per row: the action whose probability beats the anchor's by the most, if by > margin; else the anchor."""
    gain = probs - probs[:, [anchor]]
    gain[:, anchor] = -np.inf
    best = gain.argmax(1)
    return np.where(gain[np.arange(len(probs)), best] > margin, best, anchor)


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from bench_routing import parse_sets, set_outcomes
    from textrouter.encoders import get_encoder
    from textrouter.evaluate import kfold_indices
    from textrouter.grpo import TrainOptions, head_probs
    from textrouter.selection import fit_ensemble, get_candidates, oof_probs, select
    from textrouter.table import BUNDLED_TABLE, load_table, texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="A,B,C")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sets = parse_sets(ap, args.sets)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = load_table(BUNDLED_TABLE)
    x = get_encoder("minilm").features(texts(table), 128)
    base = TrainOptions(mode="head", encoder="minilm")
    cands = get_candidates("auto")
    doc: dict = {}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        for s in sets:
            mapping, o = set_outcomes(table, s)
            job = bar.add_task(f"set {s}", total=len(seeds) * args.k)
            res: dict[str, list[float]] = {"default": [], "anchor": [], "best_single": [], "leaves_anchor": []}
            for seed in seeds:
                for tr, te in kfold_indices(len(o), args.k, seed):
                    anchor = int(o[tr].mean(0).argmax())
                    sel = select(x[tr], o[tr], mapping.actions, base, cands, seed=seed)
                    oof = oof_probs(x[tr], o[tr], sel.candidate, base, seed=seed)
                    fit = [(float(o[tr][np.arange(len(tr)), anchor_choose(oof, anchor, m)].mean()), m)
                           for m in ANCHOR_GRID]
                    margin = max(fit, key=lambda a: (round(a[0], 9), a[1]))[1]
                    probs = head_probs(x[te], fit_ensemble(x[tr], o[tr], sel.candidate, base, seed))
                    ch = anchor_choose(probs, anchor, margin)
                    res["anchor"].append(float(o[te][np.arange(len(te)), ch].mean()))
                    res["leaves_anchor"].append(float((ch != anchor).mean()))
                    res["default"].append(float(o[te][np.arange(len(te)), sel.rule.choose(probs)].mean()))
                    res["best_single"].append(float(o[te][:, anchor].mean()))
                    bar.advance(job)
            doc[s] = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v))} for k, v in res.items()}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    out = Table(title=f"Anchor rule vs default, nested CV ({len(seeds)} seeds x {args.k} outer folds), held-out %")
    out.add_column("rule")
    for s in sets:
        out.add_column(f"{s} acc", justify="right")
    names = {"default": "default `train` (margin over direct)", "anchor": "anchor rule (margin over the best single)",
             "best_single": "best single action (chosen on train)"}
    for key, label in names.items():
        out.add_row(label, *[f"{100 * doc[s][key]['mean']:.1f} ± {100 * doc[s][key]['sd']:.1f}" for s in sets])
    out.add_row("anchor rule: share of questions off the anchor",
                *[f"{100 * doc[s]['leaves_anchor']['mean']:.0f}%" for s in sets])
    Console().print(out)
    return 0


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun the bench to measure")
