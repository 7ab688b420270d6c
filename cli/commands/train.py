"""`audiorouter train TABLE --out DIR`: GRPO router training on an outcome table."""
from __future__ import annotations

import json
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
    from textrouter.grpo import fit_router, save_curve_png
    from textrouter.model import save_checkpoint
    from textrouter.table import load_table

    table = load_table(table_path, mapping)
    with progress_bar(f"GRPO {opts.mode}") as bar:
        task = bar.add_task("train", total=None, reward=0.0, tool_rate=0.0)
        bar.update(task, visible=not quiet)

        def on_step(step, total, stats):
            bar.update(task, completed=step, total=total, reward=stats["reward"], tool_rate=stats["tool_rate"])

        policy, res, meta = fit_router(table, mapping, opts, Path(table_path).name, on_step)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(policy, out, meta)
    save_curve_png(res.curve, out / "reward_curve.png",
                   f"GRPO {opts.mode}, {opts.reward.kind} reward, {opts.group} groups ({len(table)} questions)")
    (out / "curve.json").write_text(json.dumps(res.curve) + "\n", encoding="utf-8")
    return meta


def register(app: typer.Typer) -> None:
    from textrouter.encoders import available_encoders  # a plain dict registry: no heavy imports

    @app.command("train")
    def train(
        table: Path = typer.Argument(..., help="Outcome table (JSONL): id, question, choices, outcomes {column: 0/1}."),
        out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write (then: audiorouter export)."),
        direct: Optional[str] = typer.Option(None, "--direct", help="Outcome column of the audio LLM answering alone."),
        tool: List[str] = typer.Option([], "--tool", help="NAME=COLUMN: a tool action and its outcome column (repeatable)."),
        mode: Optional[str] = typer.Option(None, "--mode", help="lora (paper: LoRA encoder + head) or head (frozen encoder, fast). Default: lora for minilm, head for minilm-static."),
        encoder: str = typer.Option("minilm", "--encoder", help=f"Router encoder, one of: {', '.join(available_encoders())}. minilm: the paper's policy (LoRA-trainable); minilm-static: token table distilled from MiniLM, ~0.2 ms routing, head mode only."),
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

            from textrouter.encoders import get_encoder

            mode = mode or get_encoder(encoder).modes[0]  # the encoder's first mode: lora (paper) / head
            opts = TrainOptions(mode=mode, epochs=epochs, lr=lr, head_lr=head_lr, beta=beta, group=group,
                                group_size=group_size, batch_size=batch_size, max_length=max_length, seed=seed,
                                reward=RewardConfig(kind=reward), encoder=encoder)
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
        ("encoder / mode / reward / group",
         f"{meta.get('engine', 'minilm')} / {meta['mode']} / {meta['reward']['kind']} / {meta['group']}"),
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
