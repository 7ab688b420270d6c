"""`audiorouter eval TABLE --router DIR | --cv K`: routed accuracy next to every baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from cli.errors import friendly_errors


def _fmt_pct(v: Any, std: Any = None) -> str:
    if v is None:
        return "-"
    s = f"{100 * v:.1f}"
    return s + (f" ± {100 * std:.1f}" if std is not None else "")


def _print_results(rows: dict[str, dict[str, Any]], title: str, cv: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    first = next(iter(rows.values()))
    tasks = list((first.get("per_task_mean") or first.get("per_task") or {}).keys())
    t = Table(title=title)
    t.add_column("method")
    t.add_column("accuracy %" + (" (mean ± std)" if cv else ""), justify="right")
    for task in tasks:
        t.add_column(task, justify="right")
    t.add_column("tool-call rate", justify="right")
    t.add_column("call precision", justify="right")
    for name, r in rows.items():
        if cv:
            acc = _fmt_pct(r["accuracy_mean"], r["accuracy_std"])
            per = r.get("per_task_mean") or {}
            rate, prec = r.get("tool_call_rate_mean"), r.get("call_precision_mean")
        else:
            acc = _fmt_pct(r["accuracy"])
            per = r.get("per_task") or {}
            rate, prec = r.get("tool_call_rate"), r.get("call_precision")
        style = "bold green" if name.startswith("GRPO") else None
        t.add_row(name, acc, *[_fmt_pct(per.get(k)) for k in tasks], _fmt_pct(rate), _fmt_pct(prec), style=style)
    Console().print(t)


def _eval_router(table_path: Path, router: str, train_table: Optional[Path], direct, tool, precision: str):
    import numpy as np

    from textrouter.encoders import get_encoder
    from textrouter.evaluate import compare
    from textrouter.runtime import load_router
    from textrouter.table import ActionMapping, load_table, outcome_matrix, texts

    r = load_router(router, precision=precision)
    if direct or tool:
        from cli.commands.train import resolve_mapping

        mapping = resolve_mapping(load_table(table_path), direct, tool)
    else:
        cm = dict(r.meta.get("column_mapping") or {})
        if "direct" not in cm:
            raise ValueError(f"router {router} records no column mapping; pass --direct COL --tool NAME=COL")
        mapping = ActionMapping(cm.pop("direct"), cm)
    if mapping.actions != list(r.actions):
        raise ValueError(f"the mapping's actions {mapping.actions} differ from the router's {list(r.actions)}; "
                         "map one column per router action with --direct/--tool")
    table = load_table(table_path, mapping)
    items = [{"question": row.question, "choices": list(row.choices)} for row in table.rows]
    routed = r.route_batch(items)
    index = {a: i for i, a in enumerate(r.actions)}
    chosen = np.array([index[x["action"]] for x in routed])
    o = outcome_matrix(table, mapping)
    # the supervised baseline gets the router's own encoder (engine), so the comparison is fair
    features, max_length = get_encoder(r.meta.get("engine", "minilm")).features, int(r.meta.get("max_length", 128))
    x = features(texts(table), max_length)
    if train_table is not None:
        tr = load_table(train_table, mapping)
        tr_o, tr_x, note = outcome_matrix(tr, mapping), features(texts(tr), max_length), f"baselines fit on {train_table.name}"
    else:
        tr_o, tr_x, note = o, x, "no --train TABLE: best-single and supervised are fit on this table (optimistic)"
    tasks = [row.task for row in table.rows]
    rows = compare(chosen, tr_x, tr_o, x, o, mapping.actions, tasks, router_name=f"GRPO router ({precision} ONNX)")
    return rows, mapping, note, len(table)


def register(app: typer.Typer) -> None:
    from textrouter.encoders import available_encoders  # a plain dict registry: no heavy imports

    @app.command("eval")
    def evaluate(
        table: Path = typer.Argument(..., help="Outcome table (JSONL) to evaluate on."),
        router: Optional[str] = typer.Option(None, "--router", help="Router folder (from audiorouter export)."),
        cv: Optional[int] = typer.Option(None, "--cv", help="K-fold cross-validation on TABLE (trains per fold)."),
        train_table: Optional[Path] = typer.Option(None, "--train", help="With --router: the training table, for the baselines that are fit."),
        direct: Optional[str] = typer.Option(None, "--direct", help="Outcome column of the direct action."),
        tool: List[str] = typer.Option([], "--tool", help="NAME=COLUMN (repeatable)."),
        mode: str = typer.Option("head", "--mode", help="CV training mode: head (fast, default) or lora (paper)."),
        encoder: str = typer.Option("minilm", "--encoder", help=f"CV: router encoder, one of: {', '.join(available_encoders())}."),
        reward: str = typer.Option("aligned", "--reward", help="aligned, relative (paper) or absolute."),
        group: str = typer.Option("exhaustive", "--group", help="exhaustive or sampled."),
        group_size: int = typer.Option(8, "--group-size"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        head_lr: Optional[float] = typer.Option(None, "--head-lr"),
        fractions: str = typer.Option("1", "--fractions", help="With --cv: comma-separated fractions of the training folds (data-efficiency curve), e.g. 0.25,0.5,1."),
        precision: str = typer.Option("int8", "--precision", help="With --router: int8 or fp32 ONNX model."),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Write a bar chart (PNG) of accuracy per method."),
    ) -> None:
        """Routed accuracy (overall and per task) next to direct, each tool, best single, random, supervised, oracle."""
        with friendly_errors():
            if (router is None) == (cv is None):
                raise ValueError("pass exactly one of --router DIR (evaluate an exported router) or --cv K "
                                 "(train and evaluate per fold)")
            if plot is not None and plot.suffix.lower() != ".png":
                raise ValueError(f"--plot {plot} must end in .png")
            if router is not None:
                rows, mapping, note, n = _eval_router(table, router, train_table, direct, tool, precision)
                doc = {"table": str(table), "router": router, "n": n, "actions": mapping.to_dict(),
                       "note": note, "results": rows}
                if plot:
                    from textrouter.plots import accuracy_bars

                    accuracy_bars(rows, plot, f"{table.name}: routed accuracy ({n} questions)")
                if as_json:
                    print(json.dumps(doc, indent=2))
                    return
                _print_results(rows, f"{table.name}, router {router} ({n} questions)", cv=False)
                from rich.console import Console

                Console().print(f"[dim]{note}[/dim]")
                return
            doc = _run_cv(table, cv, direct, tool, mode, reward, group, group_size, epochs, head_lr, fractions,
                          seed, quiet=as_json, encoder=encoder)
            if plot:
                from textrouter.plots import accuracy_bars, efficiency_curve

                last = doc["runs"][-1]
                accuracy_bars(last["summary"], plot, f"{table.name}: {cv}-fold CV ({doc['options']['mode']} mode)")
                if len(doc["runs"]) > 1:
                    keep = [m for m in last["summary"] if m.startswith(("GRPO", "supervised", "best single"))]
                    series = {m: [(r["summary"][m]["accuracy_mean"], r["summary"][m]["accuracy_std"])
                                  for r in doc["runs"]] for m in keep}
                    efficiency_curve([r["fraction"] for r in doc["runs"]], series,
                                     plot.with_name(plot.stem + "-efficiency.png"), f"{table.name}: data efficiency")
            if as_json:
                print(json.dumps(doc, indent=2))
                return
            for run in doc["runs"]:
                _print_results(run["summary"], f"{table.name}: {cv}-fold CV, {doc['options']['mode']} mode, "
                               f"{doc['options']['reward']['kind']} reward, {doc['options']['group']} groups, "
                               f"{int(100 * run['fraction'])}% of training folds", cv=True)


def _run_cv(table_path: Path, k: int, direct, tool, mode, reward, group, group_size, epochs, head_lr,
            fractions: str, seed: int, quiet: bool, encoder: str = "minilm") -> dict:
    from cli.commands.train import resolve_mapping
    from textrouter.encoders import get_encoder
    from textrouter.evaluate import cross_validate
    from textrouter.grpo import RewardConfig, TrainOptions
    from textrouter.table import load_table, outcome_matrix, texts

    try:
        fr = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        raise ValueError(f"--fractions {fractions!r} must be comma-separated numbers in (0, 1], e.g. 0.25,0.5,1")
    if not fr or any(not 0 < f <= 1 for f in fr):
        raise ValueError(f"--fractions {fractions!r} must be comma-separated numbers in (0, 1], e.g. 0.25,0.5,1")
    opts = TrainOptions(mode=mode, epochs=epochs, head_lr=head_lr, group=group, group_size=group_size, seed=seed,
                        reward=RewardConfig(kind=reward), encoder=encoder)
    mapping = resolve_mapping(load_table(table_path), direct, tool)
    table = load_table(table_path, mapping)
    xs, o = texts(table), outcome_matrix(table, mapping)
    tasks = [r.task for r in table.rows]
    x = get_encoder(encoder).features(xs, opts.max_length)
    runs = []
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=quiet) as bar:
        job = bar.add_task(f"{k}-fold CV ({mode})", total=k * len(fr))
        for f in fr:
            res = cross_validate(xs, o, mapping.actions, opts, k=k, seed=seed, fraction=f, tasks=tasks, features=x,
                                 on_fold=lambda i, n: bar.advance(job))
            runs.append({"fraction": f, "summary": res.summary, "folds": res.folds})
    return {"table": str(table_path), "n": len(table), "k": k, "actions": mapping.to_dict(),
            "options": opts.to_dict(), "runs": runs}
