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


def run_training(table_path: Path, out: Path, mapping, plan, quiet: bool = False) -> dict:
    """Train, save checkpoint + reward curve; returns the summary dict (also stored in meta).
    `plan`: textrouter.training.Plan (or bare TrainOptions)."""
    from textrouter.grpo import save_curve_png
    from textrouter.model import save_checkpoint
    from textrouter.table import load_table
    from textrouter.training import fit_router, size_warnings

    table = load_table(table_path, mapping)
    opts = getattr(plan, "options", plan)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in size_warnings(len(table)):
        err.print(line, markup=False)
    with progress_bar(f"GRPO {opts.mode}") as bar:
        task = bar.add_task("train", total=None, reward=0.0, tool_rate=0.0)
        bar.update(task, visible=not quiet)

        def on_step(step, total, stats):
            bar.update(task, completed=step, total=total, reward=stats["reward"], tool_rate=stats["tool_rate"])

        def on_stage(msg):
            if not quiet:
                bar.console.print(f"[dim]{msg}[/dim]")

        policy, res, meta = fit_router(table, mapping, plan, Path(table_path).name, on_step, on_stage)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(policy, out, meta)
    trained = res.options
    png = out / "reward_curve.png"
    if res.curve:
        save_curve_png(res.curve, png,
                       f"GRPO {trained.mode}, {trained.reward.kind} reward, {trained.group} groups ({len(table)} questions)")
    elif png.exists():
        png.unlink()  # a category head runs no GRPO: a curve left from an earlier run would mislead
    (out / "curve.json").write_text(json.dumps(res.curve) + "\n", encoding="utf-8")
    return meta


def runnable_note(actions) -> str | None:
    """Issue 12 #16: one line naming the actions `route`/`batch` cannot run, and the fix."""
    from toolcache import available_tools

    tools = available_tools()
    missing = [a for a in list(actions)[1:] if a not in tools]
    if not missing:
        return None
    return (f"note: action(s) {', '.join(missing)} are not toolcache tools ({', '.join(tools)}): the router "
            f"trains and evaluates, but `audiorouter route`/`batch` cannot run {'it' if len(missing) == 1 else 'them'}; "
            f"to get a runnable router, name each tool action after a toolcache tool, e.g. "
            f"--tool asr=whisper_asr_then_gpt4o")


def register(app: typer.Typer) -> None:
    from textrouter.encoders import available_encoders  # a plain dict registry: no heavy imports
    from textrouter.training import available_recipes

    @app.command("train")
    def train(
        table: Path = typer.Argument(..., help="Outcome table (JSONL): id, question, choices, outcomes {column: 0/1}."),
        out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write (then: audiorouter export)."),
        direct: Optional[str] = typer.Option(None, "--direct", help="Outcome column of the audio LLM answering alone."),
        tool: List[str] = typer.Option([], "--tool", help="NAME=COLUMN: a tool action and its outcome column (repeatable)."),
        recipe: str = typer.Option("auto", "--recipe", help=f"One of: {', '.join(available_recipes())}. auto (default): per-table selection by inner CV (category heads when rows carry a category, else GRPO heads; head mode), argmax unless a budget or costs are given; paper: LoRA r16/alpha32, lr 5e-5, beta 0.01, 1 epoch, relative reward; head: one fixed head-mode recipe."),
        max_tool_rate: Optional[float] = typer.Option(None, "--max-tool-rate", help="Budget: at most this fraction of questions routed to a tool (cost-weighted with --tool-cost); the margin is fit on the table."),
        tool_cost: List[str] = typer.Option([], "--tool-cost", help="TOOL=COST relative cost of a tool (default 1; repeatable), e.g. asr=2.0: a tool must gain COST x margin."),
        mode: Optional[str] = typer.Option(None, "--mode", help="head or lora; lora alone means --recipe paper."),
        encoder: str = typer.Option("minilm", "--encoder", help=f"Router encoder, one of: {', '.join(available_encoders())}. minilm: the paper's policy (LoRA-trainable); minilm-static: token table distilled from MiniLM, ~0.2 ms routing, head mode only."),
        reward: Optional[str] = typer.Option(None, "--reward", help="aligned, relative (paper) or absolute; fixing it turns off the selection of --recipe auto."),
        group: str = typer.Option("exhaustive", "--group", help="exhaustive (every action, prob-weighted) or sampled."),
        group_size: int = typer.Option(8, "--group-size", help="G actions sampled per question (--group sampled)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the table (recipe default; fixing it turns off the selection)."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the LoRA adapters (paper: 5e-5)."),
        head_lr: Optional[float] = typer.Option(None, "--head-lr", help="Learning rate of the head (default 1e-3 lora / 1e-2 head)."),
        beta: Optional[float] = typer.Option(None, "--beta", help="KL weight to the frozen initial policy (default 0.01)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Questions per step (default 16 lora / 32 head)."),
        max_length: int = typer.Option(128, "--max-length", help="Tokens; longer questions are truncated."),
        seed: int = typer.Option(0, "--seed", help="Random seed (sampling, initialisation, shuffling)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document (the checkpoint meta)."),
        base: Optional[str] = typer.Option(None, "--base", help="--encoder causal-lm: base LM, smollm2-135m (default) or a local HF causal-LM folder / .gguf file."),
        categories: bool = typer.Option(True, "--categories/--no-categories", help="--recipe auto: fit category heads instead of GRPO heads when every row carries a sub_category/category label (default on; the label is not needed at routing time)."),
        category_field: Optional[str] = typer.Option(None, "--category-field", help="Row field holding each question's category (default: the first of sub_category, category present on every row)."),
        fit_margin: Optional[bool] = typer.Option(None, "--fit-margin/--argmax", help="Fit the decision margin on the inner folds, or route by argmax (default: fit only with --max-tool-rate / --tool-cost)."),
    ) -> None:
        """Train a router with GRPO on an outcome table; writes a checkpoint for `audiorouter export`."""
        with friendly_errors():
            from textrouter.decision import parse_costs
            from textrouter.table import load_table
            from textrouter.training import plan as make_plan

            if out.exists() and not out.is_dir():
                raise ValueError(f"--out {out} is a file; give a folder path")
            mapping = resolve_mapping(load_table(table), direct, tool)
            costs = parse_costs(tool_cost, mapping.actions[1:])
            if encoder == "causal-lm":  # the generative router: TRL GRPO + LoRA (cli/commands/train_causal.py)
                from cli.commands.train_causal import run as run_causal

                run_causal(table, out, mapping, base=base, seed=seed, max_length=max_length, quiet=as_json)
                return
            p = make_plan(recipe, mode=mode, encoder=encoder, reward=reward, epochs=epochs, lr=lr, head_lr=head_lr,
                          beta=beta, group=group, group_size=group_size, batch_size=batch_size,
                          max_length=max_length, seed=seed, costs=costs, max_tool_rate=max_tool_rate,
                          categories=categories, category_field=category_field, fit_margin=fit_margin)
            meta = run_training(table, out, mapping, p, quiet=as_json)
            note = runnable_note(meta["actions"])
            if note:
                Console(stderr=True, highlight=False, soft_wrap=True).print(note, markup=False)
            if as_json:
                print(json.dumps({"out": str(out), **meta}, indent=2))
                return
            _print_summary(meta, out)


def _print_summary(meta: dict, out: Path) -> None:
    from rich.table import Table

    m = meta["metrics"]
    t = Table(title=f"GRPO router -> {out}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    rows = [
        ("table", f"{meta['table']['name']} ({meta['table']['n_rows']} rows, sha256 {meta['table']['sha256'][:12]})"),
        ("actions", ", ".join(f"{a}={meta['column_mapping'][a]}" for a in meta["actions"])),
        ("recipe", str(meta.get("recipe", "-"))),
        ("encoder / mode / reward / group",
         f"{meta.get('engine', 'minilm')} / {meta['mode']} / {meta['reward']['kind']} / {meta['group']}"),
        ("epochs / steps", f"{meta['epochs']} / {m['steps']}"),
    ]
    sel = meta.get("selection")
    if sel and sel.get("cv_accuracy") is None:
        rows.append(("selection (inner CV)", sel.get("note", "-")))
    elif sel:
        scores = ", ".join(f"{k} {100 * v:.1f}%" for k, v in sel["scores"].items()) or sel.get("note", "-")
        if sel.get("category_field"):
            scores += f" (category heads on {sel['categories']} values of {sel['category_field']!r})"
        rows += [("selection (inner CV)", f"chose {sel['chosen']['name']} (ensemble of {sel['chosen']['ensemble']}); "
                                         f"{sel.get('inner_k', 0)}-fold scores: {scores}"),
                 ("inner-CV accuracy / tool-call rate",
                  f"{100 * m['cv_accuracy']:.1f}% / {100 * m['cv_tool_call_rate']:.1f}% (always direct "
                  f"{100 * sel['always_direct']:.1f}%, best single {100 * sel['best_single']:.1f}%; the chosen "
                  "candidate's figure, slightly optimistic)")]
    dec = meta.get("decision")
    if dec:
        rows.append(("decision rule", f"call a tool when p(tool) - p(direct) > {dec['margin']:g} x cost "
                                      f"(budget {100 * dec['max_tool_rate']:.0f}% tool rate; costs "
                                      f"{', '.join(f'{k}={v:g}' for k, v in dec['costs'].items())})"))
    rows += [
        ("GRPO train time" if m["steps"] else "train time (category head, no GRPO)",
         f"{m['train_seconds']:.1f} s ({m['wall_seconds']:.1f} s wall incl. embeddings and selection)"),
        ("final mean reward", "- (the chosen category head runs no GRPO)" if m["final_mean_reward"] is None
         else f"{m['final_mean_reward']:+.3f}"),
        ("routed accuracy (train, in-sample)", f"{100 * m['train_routed_accuracy']:.1f}%"),
        ("always direct / oracle (train)", f"{100 * m['train_always_direct']:.1f}% / {100 * m['train_oracle']:.1f}%"),
        ("tool-call rate (train)", f"{100 * m['train_tool_call_rate']:.1f}%"),
        ("truncated questions", str(m["truncated_questions"])),
        ("files", "model.safetensors, tokenizer.json, meta.json, "
                  + ("reward_curve.png, " if m["steps"] else "") + "curve.json"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)
    Console().print(f"next: audiorouter export {out}  (held-out numbers: audiorouter eval TABLE --cv 5)")


def Console(**kw):  # noqa: N802 - rich's Console, imported lazily (keeps `audiorouter --help` light)
    from rich.console import Console as _Console

    return _Console(**kw)
