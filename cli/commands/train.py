"""`audiorouter train TABLE --out DIR`: GRPO router training on an outcome table."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from cli.errors import friendly_errors


def resolve_mapping(table, direct: Optional[str], tools: List[str]):
    """The action mapping from flags, else a sensible default for the table (one-line error if none)."""
    from textrouter.table import DEFAULT_MAPPING, ActionMapping

    cols = table.columns
    if direct or tools:
        if not direct:
            raise ValueError("--tool given without --direct; pass --direct COLUMN (the audio LLM answering alone)")
        if not tools:
            raise ValueError("--direct given without --tool; pass at least one --tool NAME=COLUMN")
        mapping = ActionMapping.parse(direct, tools)
    elif "direct" in cols and len(cols) > 1:
        mapping = ActionMapping("direct", {c: c for c in cols if c != "direct"})
    elif all(c in cols for c in DEFAULT_MAPPING.columns):
        mapping = DEFAULT_MAPPING
    else:
        raise ValueError(f"no column mapping: pass --direct COLUMN --tool NAME=COLUMN (the table's columns are: "
                         f"{', '.join(cols)})")
    mapping.validate(table)
    return mapping


def progress_bar(label: str):
    """A rich progress bar on stderr showing mean reward and tool-call rate."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                    TextColumn("reward {task.fields[reward]:+.3f}  tool-rate {task.fields[tool_rate]:.2f}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=False)


def run_training(table_path: Path, out: Path, mapping, opts, quiet: bool = False) -> dict:
    """Train, save checkpoint + reward curve; returns the summary dict (also stored in meta)."""
    import numpy as np

    from textrouter.embed_cache import embeddings, encode
    from textrouter.grpo import (head_probs, policy_from_head, policy_probs, save_curve_png, train_head,
                                 train_lora)
    from textrouter.model import ENCODER_ID, save_checkpoint
    from textrouter.table import load_table, outcome_matrix, texts

    table = load_table(table_path, mapping)
    mapping.validate(table)
    xs = texts(table)
    o = outcome_matrix(table, mapping)
    _, _, truncated = encode(xs, opts.max_length)
    t0 = time.perf_counter()
    with progress_bar(f"GRPO {opts.mode}") as bar:
        task = bar.add_task("train", total=None, reward=0.0, tool_rate=0.0)
        bar.update(task, visible=not quiet)

        def on_step(step, total, stats):
            bar.update(task, completed=step, total=total, reward=stats["reward"], tool_rate=stats["tool_rate"])

        if opts.mode == "head":
            x = embeddings(xs, opts.max_length)
            res = train_head(x, o, opts, on_step)
            probs = head_probs(x, res.head)
            policy = policy_from_head(mapping.actions, res.head, seed=opts.seed)
        else:
            res = train_lora(xs, o, mapping.actions, opts, on_step)
            policy = res.policy
            probs = policy_probs(policy, xs, opts.max_length)
    wall = time.perf_counter() - t0
    chosen = probs.argmax(1)
    n = len(o)
    metrics = {
        "train_routed_accuracy": float(o[np.arange(n), chosen].mean()),
        "train_always_direct": float(o[:, 0].mean()),
        "train_oracle": float(o.max(1).mean()),
        "train_tool_call_rate": float((chosen != 0).mean()),
        "final_mean_reward": float(np.mean([c["reward"] for c in res.curve[-max(1, len(res.curve) // 10):]])),
        "steps": len(res.curve),
        "train_seconds": round(res.elapsed_s, 3),
        "wall_seconds": round(wall, 3),
        "truncated_questions": int(truncated.sum()),
    }
    meta = {
        "actions": mapping.actions,
        "direct_action": "direct",
        "column_mapping": mapping.to_dict(),
        "encoder": ENCODER_ID,
        "max_length": opts.max_length,
        "reward": {"kind": opts.reward.kind, **{k: v for k, v in opts.reward.__dict__.items() if k != "kind"}},
        "table": {"sha256": table.sha256, "name": Path(table_path).name, "n_rows": n},
        "seed": opts.seed, "mode": opts.mode, "group": opts.group, "epochs": opts.n_epochs,
        "options": opts.to_dict(),
        "metrics": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(policy, out, meta)
    save_curve_png(res.curve, out / "reward_curve.png",
                   f"GRPO {opts.mode}, {opts.reward.kind} reward, {opts.group} groups ({n} questions)")
    (out / "curve.json").write_text(json.dumps(res.curve) + "\n", encoding="utf-8")
    return meta


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        table: Path = typer.Argument(..., help="Outcome table (JSONL): id, question, choices, outcomes {column: 0/1}."),
        out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write (then: audiorouter export)."),
        direct: Optional[str] = typer.Option(None, "--direct", help="Outcome column of the audio LLM answering alone."),
        tool: List[str] = typer.Option([], "--tool", help="NAME=COLUMN: a tool action and its outcome column (repeatable)."),
        mode: str = typer.Option("lora", "--mode", help="lora (paper: LoRA encoder + head) or head (frozen encoder, fast)."),
        reward: str = typer.Option("aligned", "--reward", help="aligned (default, by CV), relative (paper) or absolute."),
        group: str = typer.Option("exhaustive", "--group", help="exhaustive (every action, prob-weighted) or sampled."),
        group_size: int = typer.Option(8, "--group-size", help="G actions sampled per question (--group sampled)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the table (default 1 lora / 10 head)."),
        lr: float = typer.Option(5e-5, "--lr", help="Learning rate of the LoRA adapters."),
        head_lr: Optional[float] = typer.Option(None, "--head-lr", help="Learning rate of the head (default 1e-3 lora / 1e-2 head)."),
        beta: float = typer.Option(0.01, "--beta", help="KL weight to the frozen initial policy."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Questions per step (default 16 lora / 32 head)."),
        max_length: int = typer.Option(128, "--max-length", help="Tokens; longer questions are truncated."),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document (the checkpoint meta)."),
    ) -> None:
        """Train a router with GRPO on an outcome table; writes a checkpoint for `audiorouter export`."""
        with friendly_errors():
            from textrouter.grpo import RewardConfig, TrainOptions
            from textrouter.table import load_table

            opts = TrainOptions(mode=mode, epochs=epochs, lr=lr, head_lr=head_lr, beta=beta, group=group,
                                group_size=group_size, batch_size=batch_size, max_length=max_length, seed=seed,
                                reward=RewardConfig(kind=reward))
            if out.exists() and not out.is_dir():
                raise ValueError(f"--out {out} is a file; give a folder path")
            mapping = resolve_mapping(load_table(table), direct, tool)
            meta = run_training(table, out, mapping, opts, quiet=as_json)
            if as_json:
                print(json.dumps({"out": str(out), **meta}, indent=2))
                return
            _print_summary(meta, out)


def _print_summary(meta: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    m = meta["metrics"]
    t = Table(title=f"GRPO router -> {out}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    rows = [
        ("table", f"{meta['table']['name']} ({meta['table']['n_rows']} rows, sha256 {meta['table']['sha256'][:12]})"),
        ("actions", ", ".join(f"{a}={meta['column_mapping'][a]}" for a in meta["actions"])),
        ("mode / reward / group", f"{meta['mode']} / {meta['reward']['kind']} / {meta['group']}"),
        ("epochs / steps", f"{meta['epochs']} / {m['steps']}"),
        ("GRPO train time", f"{m['train_seconds']:.1f} s ({m['wall_seconds']:.1f} s wall incl. embeddings and model loading)"),
        ("final mean reward", f"{m['final_mean_reward']:+.3f}"),
        ("routed accuracy (train, in-sample)", f"{100 * m['train_routed_accuracy']:.1f}%"),
        ("always direct / oracle (train)", f"{100 * m['train_always_direct']:.1f}% / {100 * m['train_oracle']:.1f}%"),
        ("tool-call rate (train)", f"{100 * m['train_tool_call_rate']:.1f}%"),
        ("truncated questions", str(m["truncated_questions"])),
        ("files", "model.safetensors, tokenizer.json, meta.json, reward_curve.png, curve.json"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)
    Console().print(f"next: audiorouter export {out}  (held-out numbers: audiorouter eval TABLE --cv 5)")
