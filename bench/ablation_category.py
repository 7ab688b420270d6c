#!/usr/bin/env python
"""How much routing signal MMAU's own question categories carry, under the routing bench's splits.

    python bench/ablation_category.py                    # sets A, B, C; seeds 0,1,2 x 5 outer folds
    python bench/ablation_category.py --sets C --shrink 0,5,20 --json out.json

A diagnostic for the routing target (beat the best single action by >= 1.5 points): if knowing
each question's category (MMAU's `sub_category`, 27 on the bundled table, or its `task`: speech /
sound / music) does not get there, no router reading the question text will at this table size.
Same splits as bench/bench_routing.py (textrouter.evaluate.kfold_indices, seeds x outer folds).
On each outer training part, per category c and action a, the accuracy estimate is shrunk toward
the action's accuracy over the whole part: (correct_ca + s * acc_a) / (n_c + s), s = --shrink;
a held-out question gets the argmax for its category (ties: the lower index, direct first):

- "by true category": the held-out question's labelled category (not available to a router:
  a ceiling on what category-level routing can do);
- "by predicted category": the category from the multinomial logistic regression `train` fits
  (textrouter.category.category_probs) on the same MiniLM question embeddings bench_routing
  uses, fitted on the outer training part, expected accuracy sum_c P(c | question) x
  estimate(c, a), argmax, not distilled into a linear head.

Baselines on the same splits: always direct, best single action (chosen on the training part),
oracle. The default `train` row is bench/bench_routing.py's (same seeds and folds).

`--variants` adds the stop-22 attempts at set C's target, each on the predicted sub-category
with s = 5 unless named: "hierarchical" (a sub-category's estimate shrunk by 5 rows toward its
task's estimate, itself shrunk toward the table-wide one, instead of straight to the table-wide
one); "switch from best single at gain > g" (keep the training part's best action unless
another's expected accuracy beats it by more than g, g = 0.02, 0.05); "classifier temperature
T" (P(category | question) flattened, T = 2); "k nearest questions" (no categories: the
shrunk mean outcome of the k = 10 / 50 most similar training questions, cosine).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from bench_routing import parse_sets, set_outcomes
    from textrouter import baselines as B
    from textrouter.category import category_estimates, category_probs
    from textrouter.encoders import get_encoder
    from textrouter.evaluate import kfold_indices
    from textrouter.table import BUNDLED_TABLE, load_table, texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="A,B,C")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", type=int, default=5, help="outer folds")
    ap.add_argument("--shrink", default="5", help="comma-separated shrinkage strengths s (rows)")
    ap.add_argument("--variants", action="store_true", help="also the stop-22 variants (docstring)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sets = parse_sets(ap, args.sets)
    seeds = [int(s) for s in args.seeds.split(",")]
    shrinks = [float(s) for s in args.shrink.split(",")]
    table = load_table(BUNDLED_TABLE)
    x = get_encoder("minilm").features(texts(table), 128)  # the routing bench's features (disk cache)
    labels = {"sub-category": [r.metadata.get("sub_category") or "?" for r in table.rows],
              "task": [r.metadata.get("task") or r.task or "?" for r in table.rows]}
    codes = {}
    for kind, lab in labels.items():
        names = sorted(set(lab))
        codes[kind] = (np.array([names.index(v) for v in lab]), len(names))
    doc: dict = {"n": len(table), "seeds": seeds, "k": args.k, "categories": {k: n for k, (_, n) in codes.items()},
                 "sets": {}}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        for s in sets:
            _, o = set_outcomes(table, s)
            o = np.asarray(o)
            res: dict[str, list[float]] = {}
            job = bar.add_task(f"set {s}", total=len(seeds) * args.k)
            for seed in seeds:
                for tr, te in kfold_indices(len(o), args.k, seed):
                    def add(name, chosen):
                        res.setdefault(name, []).append(float(o[te][np.arange(len(te)), chosen].mean()))

                    add("always direct", np.zeros(len(te), int))
                    add("best single (chosen on train folds)", B.best_single(x[tr], o[tr], x[te], len(te)))
                    for kind, (cats, n_cats) in codes.items():
                        p = category_probs(x[tr], cats[tr], n_cats, x[te])  # the classifier `train` fits
                        for sh in shrinks:
                            est = category_estimates(cats[tr], o[tr], n_cats, sh)
                            tag = f" (s={sh:g})" if len(shrinks) > 1 else ""
                            add(f"by true {kind}{tag}", est[cats[te]].argmax(1))
                            add(f"by predicted {kind}{tag}", (p @ est).argmax(1))
                    if args.variants:
                        variants(add, x, o, tr, te, codes)
                    res.setdefault("oracle", []).append(B.oracle_accuracy(o[te]))
                    bar.advance(job)
            doc["sets"][s] = {name: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "n_folds": len(v)}
                              for name, v in res.items()}
    out = Table(title=f"Routing by MMAU category, nested splits of bench_routing ({len(table)} questions, "
                      f"{len(seeds)} seeds x {args.k} outer folds): held-out accuracy %")
    out.add_column("method")
    for s in sets:
        out.add_column(f"{s} acc", justify="right")
        out.add_column(f"{s} - best single", justify="right")
    for name in doc["sets"][sets[0]]:
        cells = []
        for s in sets:
            r, ref = doc["sets"][s][name], doc["sets"][s]["best single (chosen on train folds)"]
            cells += [f"{100 * r['mean']:.1f} ± {100 * r['sd']:.1f}", f"{100 * (r['mean'] - ref['mean']):+.1f}"]
        out.add_row(name, *cells)
    Console().print(out)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def variants(add, x, o, tr, te, codes, s: float = 5.0) -> None:
    """The --variants rows for one outer split (training part tr, held-out te)."""
    from textrouter.category import category_estimates, category_probs

    sub, n_sub = codes["sub-category"]
    task, n_task = codes["task"]
    p = category_probs(x[tr], sub[tr], n_sub, x[te])
    est = category_estimates(sub[tr], o[tr], n_sub, s)
    parent = category_estimates(task[tr], o[tr], n_task, s)
    hier = est.copy()
    for c in range(n_sub):
        rows = sub[tr] == c
        if rows.any():  # the task most of the category's rows belong to (MMAU: all of them)
            hier[c] = (o[tr][rows].sum(0) + s * parent[np.bincount(task[tr][rows]).argmax()]) / (rows.sum() + s)
    add("variant: hierarchical sub-category -> task (s=5)", (p @ hier).argmax(1))
    q, best = p @ est, int(o[tr].mean(0).argmax())
    for g in (0.02, 0.05):
        gain = q - q[:, [best]]
        add(f"variant: switch from best single at gain > {g:g}", np.where(gain.max(1) > g, gain.argmax(1), best))
    z = np.log(np.clip(p, 1e-12, None)) / 2.0
    pt = np.exp(z - z.max(1, keepdims=True))
    add("variant: classifier temperature 2", ((pt / pt.sum(1, keepdims=True)) @ est).argmax(1))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    near = np.argsort(-(xn[te] @ xn[tr].T), 1)
    for k in (10, 50):
        add(f"variant: {k} nearest questions", ((o[tr][near[:, :k]].sum(1) + s * o[tr].mean(0)) / (k + s)).argmax(1))


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun the bench to measure")
