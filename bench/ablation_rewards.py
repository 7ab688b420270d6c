"""Reward / group ablation and data-efficiency curve of the GRPO router (head mode, K-fold CV).

Usage:
    python bench/ablation_rewards.py                       # reward x group ablation, both action sets
    python bench/ablation_rewards.py --efficiency          # 25/50/100% of the training folds
    python bench/ablation_rewards.py --seeds 0,1,2 --json out.json
    python bench/ablation_rewards.py --encoder minilm-static --configs aligned --sets pair,qwen2,r1aqa

Every number is the held-out routed accuracy (mean ± std over the K folds of one seeded split),
measured in this run on the bundled real table (textrouter/data/mmau-mini-outcomes-dev.jsonl).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

ACTION_SETS = {
    "pair": ("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o"}),  # the bundled routers' actions
    "qwen2": ("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o", "caption": "qwen2_caption_then_gpt4o"}),
    "r1aqa": ("r1_aqa_direct", {"asr": "whisper_asr_then_gpt4o", "caption": "r1aqa_5caption_then_gpt4o"}),
}
CONFIGS = [  # (label, reward kind, group, call_cost)
    ("relative (paper), exhaustive", "relative", "exhaustive", 0.0),
    ("relative (paper), sampled G=8", "relative", "sampled", 0.0),
    ("aligned, exhaustive (default)", "aligned", "exhaustive", 0.0),
    ("aligned, sampled G=8", "aligned", "sampled", 0.0),
    ("absolute, exhaustive", "absolute", "exhaustive", 0.0),
    ("aligned + call cost 0.1, exhaustive", "aligned", "exhaustive", 0.1),
]


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from textrouter.encoders import available_encoders, get_encoder
    from textrouter.evaluate import GRPO, cross_validate
    from textrouter.grpo import RewardConfig, TrainOptions
    from textrouter.table import BUNDLED_TABLE, ActionMapping, load_table, outcome_matrix, texts

    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--sets", default="qwen2,r1aqa")
    ap.add_argument("--efficiency", action="store_true")
    ap.add_argument("--encoder", default="minilm", choices=available_encoders())
    ap.add_argument("--configs", default="all", help="'all' or a label prefix, e.g. 'aligned' or 'relative'")
    ap.add_argument("--json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = load_table(BUNDLED_TABLE)
    xs = texts(table)
    tasks = [r.task for r in table.rows]
    x = get_encoder(args.encoder).features(xs)
    doc: dict = {}
    console = Console()
    for set_name in args.sets.split(","):
        direct, tools = ACTION_SETS[set_name]
        mapping = ActionMapping(direct, tools)
        o = outcome_matrix(table, mapping)
        t = Table(title=f"{set_name}: {direct} + {tools} | {args.k}-fold CV, {args.encoder} encoder, head mode, "
                        f"seeds {seeds}")
        for c in ("config", "GRPO acc %", "tool-call rate", "supervised %", "best other baseline %", "oracle %", "s"):
            t.add_column(c, justify="left" if c == "config" else "right")
        runs = ([(f"aligned exhaustive, {int(f * 100)}% train", "aligned", "exhaustive", 0.0, f) for f in (0.25, 0.5, 1.0)]
                if args.efficiency else [(*c, 1.0) for c in CONFIGS
                                         if args.configs == "all" or c[0].startswith(args.configs)])
        for label, kind, group, cost, frac in runs:
            t0 = time.perf_counter()
            accs, rates, sup, other, orc = [], [], [], [], []
            for seed in seeds:
                opts = TrainOptions(mode="head", reward=RewardConfig(kind=kind, call_cost=cost), group=group, seed=seed,
                                    encoder=args.encoder)
                res = cross_validate(xs, o, mapping.actions, opts, k=args.k, seed=seed, fraction=frac, tasks=tasks,
                                     features=x)
                for f in res.folds:
                    accs.append(f[GRPO]["accuracy"])
                    rates.append(f[GRPO]["tool_call_rate"])
                    sup.append(f["supervised (logreg per action)"]["accuracy"])
                    other.append(max(v["accuracy"] for k_, v in f.items()
                                     if k_ not in (GRPO, "oracle", "supervised (logreg per action)")))
                    orc.append(f["oracle"]["accuracy"])
            el = time.perf_counter() - t0
            row = {"acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)),
                   "tool_rate": float(np.mean(rates)), "supervised_mean": float(np.mean(sup)),
                   "supervised_std": float(np.std(sup)), "best_other_fixed_mean": float(np.mean(other)),
                   "oracle_mean": float(np.mean(orc)), "seconds": el}
            doc.setdefault(set_name, {})[label] = row
            t.add_row(label, f"{100 * row['acc_mean']:.1f} ± {100 * row['acc_std']:.1f}", f"{row['tool_rate']:.2f}",
                      f"{100 * row['supervised_mean']:.1f} ± {100 * row['supervised_std']:.1f}",
                      f"{100 * row['best_other_fixed_mean']:.1f}", f"{100 * row['oracle_mean']:.1f}", f"{el:.0f}")
        console.print(t)
    save_json(args.json, doc)


def save_json(path: str | None, doc: dict) -> None:
    """Write the run's numbers as JSON when --json PATH was given."""
    if path:
        with open(path, "w") as fh:
            json.dump(doc, fh, indent=2)


if __name__ == "__main__":
    main()
