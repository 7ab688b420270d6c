"""Nested cross-validation of the default `audiorouter train` recipe against every baseline.

    python bench/bench_routing.py                         # sets A, B, C; seeds 0,1,2 x 5 outer folds
    python bench/bench_routing.py --sets B --seeds 0 --json out.json
    python bench/bench_routing.py --candidates single     # one fixed recipe (no selection) for comparison
    python bench/bench_routing.py --sets pair [--encoder minilm-static]   # the bundled routers' recipe

For each action set, seed and outer fold, the whole default training procedure runs on the
outer training part only (textrouter.selection.select: candidates scored by 4-fold inner CV,
decision rule fitted on the inner out-of-fold probabilities, winner refit on the whole outer
training part) and is scored on the held-out outer fold. The baselines see the same splits:
always-direct, best single action (chosen on the outer training part), the supervised
classifier (one L2 logistic regression per action on the same frozen embeddings, argmax),
random (exact expectation) and the oracle. Printed: mean ± sd over seeds x outer folds of
routed accuracy, and the tool-call rate. Bundled real table only (499 MMAU test-mini questions).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETS = {
    "A": ("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o", "caption": "qwen2_caption_then_gpt4o"}),
    "B": ("r1_aqa_direct", {"asr": "whisper_asr_then_gpt4o", "caption": "r1aqa_5caption_then_gpt4o"}),
    "C": ("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o", "caption": "qwen2_caption_then_gpt4o",
                                 "omni_caption": "qwen25omni_caption_then_gpt4o",
                                 "r1aqa_caption": "r1aqa_5caption_then_gpt4o"}),
}
# the bundled routers' actions (scripts/build_default_router.py); not in the judged default A,B,C
SETS["pair"] = ("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o"})
ROUTER = "default train (selected, nested)"


def set_outcomes(table, name: str):
    """(ActionMapping, outcome matrix [N, A] int8) of action set `name` on an outcome table."""
    from textrouter.table import ActionMapping, outcome_matrix

    direct, tools = SETS[name]
    mapping = ActionMapping(direct, tools)
    return mapping, outcome_matrix(table, mapping)


def parse_sets(ap, text: str) -> list[str]:
    """`--sets A,B,C` -> ["A", "B", "C"]; an unknown name exits through ap.error naming the valid ones."""
    sets = [s.strip() for s in text.split(",")]
    bad = [s for s in sets if s not in SETS]
    if bad:
        ap.error(f"unknown set(s) {bad}; valid: {', '.join(SETS)}")
    return sets


def run_set(x, o, actions, candidates, base, seeds, k, costs=None, max_tool_rate=1.0, progress=None,
            cats=None, n_cats=None, fit_margin=None):
    from textrouter import baselines as B
    from textrouter.evaluate import kfold_indices
    from textrouter.grpo import head_probs
    from textrouter.selection import fit_ensemble, select

    rows: dict[str, list[tuple[float, float]]] = {}
    picks = []

    def add(name, chosen, te):
        ch = np.asarray(chosen)
        rows.setdefault(name, []).append((float(o[te][np.arange(len(te)), ch].mean()), float((ch != 0).mean())))

    for seed in seeds:
        for tr, te in kfold_indices(len(o), k, seed):
            sub = None if cats is None else cats[tr]  # the training part's category labels only
            sel = select(x[tr], o[tr], actions, base, candidates, seed=seed, costs=costs, max_tool_rate=max_tool_rate,
                         cats=sub, n_cats=n_cats, fit_margin=fit_margin)
            probs = head_probs(x[te], fit_ensemble(x[tr], o[tr], sel.candidate, base, seed, sub, n_cats))
            add(ROUTER, sel.rule.choose(probs), te)
            add("  same recipe, argmax (no margin)", probs.argmax(1), te)
            picks.append((sel.candidate.name, round(sel.rule.margin, 3)))
            add("always direct", np.zeros(len(te), int), te)
            add("best single (chosen on train folds)", B.best_single(x[tr], o[tr], x[te], len(te)), te)
            add("supervised classifier (logreg per action)", B.supervised(x[tr], o[tr], x[te], len(te)), te)
            rows.setdefault("random (expected)", []).append((B.random_expected(o[te]), float("nan")))
            rows.setdefault("oracle", []).append((B.oracle_accuracy(o[te]), float("nan")))
            if progress:
                progress()
    summary = {}
    for name, vals in rows.items():
        acc = np.array([v[0] for v in vals])
        rate = np.array([v[1] for v in vals])
        summary[name] = {"mean": float(acc.mean()), "sd": float(acc.std()), "n_folds": len(acc),
                         "tool_call_rate": None if np.isnan(rate).all() else float(np.nanmean(rate))}
    return summary, picks


def results_table(title: str, summaries: dict, sets, highlight: str, style: str = "bold"):
    """One rich table: a row per method, per set its accuracy (mean ± sd, %) and tool-call rate.
    summaries[set][method] = {"mean", "sd", "tool_call_rate"} (fractions; rate None for baselines)."""
    from rich.table import Table

    out = Table(title=title)
    out.add_column("method")
    for s in sets:
        out.add_column(f"{s} acc", justify="right")
        out.add_column(f"{s} calls", justify="right")
    for name in summaries[sets[0]]:
        cells = []
        for s in sets:
            r = summaries[s][name]
            cells += [f"{100 * r['mean']:.1f} ± {100 * r['sd']:.1f}",
                      "-" if r["tool_call_rate"] is None else f"{100 * r['tool_call_rate']:.0f}%"]
        out.add_row(name, *cells, style=style if name == highlight else None)
    return out


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from textrouter.encoders import available_encoders, get_encoder
    from textrouter.grpo import TrainOptions
    from textrouter.selection import available_candidate_sets, get_candidates
    from textrouter.table import BUNDLED_TABLE, load_table, texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="A,B,C")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", type=int, default=5, help="outer folds")
    ap.add_argument("--encoder", default="minilm", choices=available_encoders())
    ap.add_argument("--candidates", default="auto", choices=available_candidate_sets())
    ap.add_argument("--fit-margin", action="store_true",
                    help="fit the decision margin on the inner folds (`train --fit-margin`; default: argmax)")
    ap.add_argument("--no-categories", action="store_true",
                    help="ignore the table's sub_category labels (what `train` does on a table without them)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = parse_sets(ap, args.sets)
    table = load_table(BUNDLED_TABLE)
    from textrouter.category import category_codes

    found = None if args.no_categories else category_codes(table)
    cats, n_cats = (found[0], len(found[1])) if found else (None, None)
    t0 = time.perf_counter()
    x = get_encoder(args.encoder).features(texts(table), 128)  # cached on disk after the first run
    embed_s = time.perf_counter() - t0
    base = TrainOptions(mode="head", encoder=args.encoder)
    candidates = get_candidates(args.candidates)
    console = Console()
    doc = {"table": BUNDLED_TABLE.name, "n": len(table), "encoder": args.encoder, "seeds": seeds, "k": args.k,
           "category_field": found[2] if found else None,
           "candidates": [c.to_dict() for c in candidates], "embed_seconds": embed_s, "sets": {}}
    summaries = {}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        for s in sets:
            mapping, o = set_outcomes(table, s)
            job = bar.add_task(f"set {s}", total=len(seeds) * args.k)
            t1 = time.perf_counter()
            summary, picks = run_set(x, o, mapping.actions, candidates, base, seeds, args.k,
                                     progress=lambda: bar.advance(job), cats=cats, n_cats=n_cats,
                                     fit_margin=True if args.fit_margin else None)
            summaries[s] = summary
            doc["sets"][s] = {"actions": mapping.to_dict(), "summary": summary, "picks": picks,
                              "seconds": time.perf_counter() - t1}
    console.print(results_table(
        f"Nested CV on the bundled table ({len(table)} questions, {args.encoder}, candidates {args.candidates}): "
        f"routed accuracy %, mean ± sd over {len(seeds)} seeds x {args.k} outer folds",
        summaries, sets, highlight=ROUTER, style="bold green"))
    for s in sets:
        sm = summaries[s]
        gain_single = 100 * (sm[ROUTER]["mean"] - sm["best single (chosen on train folds)"]["mean"])
        gain_sup = 100 * (sm[ROUTER]["mean"] - sm["supervised classifier (logreg per action)"]["mean"])
        ok = gain_single >= 1.5 and gain_sup > 0
        picks = doc["sets"][s]["picks"]
        chosen = {p: sum(1 for c, _ in picks if c == p) for p in sorted({c for c, _ in picks})}
        console.print(f"set {s}: default train - best single {gain_single:+.1f} pts, - supervised {gain_sup:+.1f} pts "
                      f"-> target (>= +1.5 and > 0) {'MET' if ok else 'MISSED'}; picks {chosen}; margins "
                      f"median {np.median([m for _, m in picks]):+.3f}; {doc['sets'][s]['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
