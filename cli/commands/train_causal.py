"""`audiorouter train --encoder causal-lm [--base NAME|PATH]`: the generative router (TRL GRPO + LoRA).

Not a command of its own: cli/commands/train.py calls `run` when --encoder is causal-lm. Writes
OUT/model/ (merged HF model + tokenizer) and OUT/causal.json; `audiorouter export OUT` (or
textrouter.causal_export.export_checkpoint) turns it into a router folder (engine causal-lm).
"""
from __future__ import annotations

import json
from pathlib import Path


def run(table_path: Path, out: Path, mapping, base: str | None = None, seed: int = 0, max_length: int = 128,
        quiet: bool = False, max_steps: int | None = None) -> dict:
    """Train and save; returns the checkpoint summary. Progress: a rich bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from textrouter import causal_lm as C
    from textrouter.table import load_table, outcome_matrix, texts

    table = load_table(table_path, mapping)
    opts = C.CausalOptions(base=base or C.DEFAULT_BASE, seed=seed, max_length=max_length, max_steps=max_steps)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                  disable=quiet) as bar:
        job = bar.add_task(f"loading {opts.base}", total=None)

        def step(done: int, total: int, stats: dict) -> None:
            reward = stats.get("reward")
            bar.update(job, completed=done, total=total,
                       description=f"GRPO {stats.get('phase', '')}" + (f" reward {reward:+.2f}" if reward is not None else ""))

        res = C.train_causal(texts(table), outcome_matrix(table, mapping), mapping.actions, opts, on_step=step)
    meta = {"actions": mapping.actions, "column_mapping": mapping.to_dict(), "base": opts.base,
            "table": {"sha256": table.sha256, "name": Path(table_path).name, "n_rows": len(table)}}
    C.save_checkpoint(res, out, meta)
    summary = {"out": str(out), "engine": C.ENGINE, "base": opts.base, "train_seconds": round(res.elapsed_s, 1),
               "steps": len(res.step_s), "mean_step_seconds": round(sum(res.step_s) / max(len(res.step_s), 1), 2)}
    if quiet:
        print(json.dumps(summary, indent=2))
    else:
        from rich.table import Table

        t = Table(title=f"causal-lm router -> {out}", show_header=False)
        for k, v in summary.items():
            t.add_row(k, str(v))
        Console().print(t)
        Console().print(f"next: audiorouter export {out}")
    return summary
