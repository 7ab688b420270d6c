"""`audiorouter batch`: routed predictions for a benchmark, scored by MMAU's / MMAR's evaluation.py."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli import options as opt
from cli.errors import friendly_errors


def batch(
    dataset: Path = typer.Argument(..., help="Questions: MMAU JSON, MMAR JSON/JSONL or audiorouter JSONL."),
    out: Path = typer.Option(..., "--out", "-o", help="Predictions JSON (the dataset rows + prediction keys)."),
    router_dir: Optional[Path] = opt.ROUTER_DIR,
    precision: str = opt.PRECISION,
    margin: Optional[float] = typer.Option(None, "--margin", help="Override the router's decision margin: call a tool only when p(tool) - p(direct) > margin x cost (router.json decision; default: the fitted one)."),
    max_tool_rate: Optional[float] = typer.Option(None, "--max-tool-rate", help="Override the router's tool budget: a fraction of questions (0..1), turned into a margin on the router's fitted curve."),
    reasoner_name: Optional[str] = opt.REASONER,
    reasoner_url: Optional[str] = opt.REASONER_URL,
    model: Optional[str] = opt.MODEL,
    timeout: Optional[float] = opt.TIMEOUT,
    retries: Optional[int] = opt.RETRIES,
    audio_part: Optional[str] = opt.AUDIO_PART,
    audio_root: Optional[Path] = opt.AUDIO_ROOT,
    fmt: Optional[str] = opt.FORMAT,
    limit: Optional[int] = opt.LIMIT,
    concurrency: int = opt.CONCURRENCY,
    max_failures: int = opt.MAX_FAILURES,
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute tools and re-ask the reasoner."),
    as_json: bool = opt.AS_JSON,
) -> None:
    """Route every question, run the chosen tool, ask the reasoner; write benchmark predictions."""
    with friendly_errors():
        from cli import batching, datasets, pipeline, render

        config = pipeline.ReasonerConfig.from_cli(reasoner_name, reasoner_url, model, timeout, retries, concurrency,
                                                  audio_part=audio_part)
        if not config.enabled:
            raise ValueError(f"batch needs a reasoner: {pipeline.HOW_TO_ADD_A_REASONER}")
        ds = datasets.load_dataset(dataset, fmt=fmt, audio_root=audio_root, limit=limit)
        router = pipeline.load_router(router_dir, precision, margin, max_tool_rate)
        pipeline.check_router_tools(router)
        reasoner = config.create()
        counts = {"ok": 0, "errors": 0, "tool": 0}
        with render.progress() as bar:
            task = bar.add_task("batch", total=len(ds), status="")

            def on_row(row: dict) -> None:
                counts["errors" if row.get("error") else "ok"] += 1
                counts["tool"] += int(bool(row.get("tool_called")))
                bar.update(task, advance=1,
                           status=f"ok {counts['ok']} · tool calls {counts['tool']} · errors {counts['errors']}")

            try:
                summary, report = batching.batch(ds, router, reasoner, out,
                                               router_name=pipeline.router_label(router_dir),
                                               use_cache=not no_cache, max_failures=max_failures,
                                               chunk_size=concurrency, on_row=on_row)
            finally:
                reasoner.close()
            bar.update(task, completed=len(ds))
        doc = {"predictions": str(out), "dataset": str(dataset), "format": ds.format,
               "questions": summary.total, "skipped_done": summary.skipped_done, "processed": summary.processed,
               "reasoner_requests": summary.server_calls, "reasoner_cache_hits": summary.cache_hits,
               "reasoner_cache_note": summary.cache_note, "report": report}
        if as_json:
            render.print_json(doc)
            return
        rows_out = [("questions", str(report["rows"])), ("answered", str(report["answered"])),
                    ("error rows", str(report["errors"])), ("no choice matched", str(report["unmatched"])),
                    ("tool-call rate", render.pct(report["tool_call_rate"])),
                    ("reasoner requests / cache hits", f"{summary.server_calls} / {summary.cache_hits}")]
        if report["accuracy"] is not None:
            left_out = report["not_counted"]
            extra = f", errors={left_out['errors']} not counted" if left_out["errors"] else ""
            if left_out["no_answer_key"]:
                extra += f", {left_out['no_answer_key']} without an answer key not counted"
            rows_out.append((f"accuracy (n={report['scored']}{extra})", render.pct(report["accuracy"])))
            for g, v in report["per_group"].items():
                rows_out.append((f"  {g} (n={v['n']})", render.pct(v["accuracy"])))
        render.out.print(render.summary_table(f"batch -> {out}", rows_out))
        if summary.cache_note:
            render.note(summary.cache_note)
        render.note("score with the benchmark's own script: MMAU `python evaluation.py --input "
                         f"{out}` (key model_prediction/model_output), MMAR (key answer_prediction)")


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
