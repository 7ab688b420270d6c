"""`audiorouter batch`: routed predictions for a benchmark, scored by MMAU's / MMAR's evaluation.py."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.datasets import available_formats
from cli.errors import friendly_errors
from reasoner import available_reasoners  # light: the back-ends import lazily

# Option help lists the valid names from the registries.
REASONER_HELP = f"Reasoner back-end: {', '.join(available_reasoners())} (--reasoner-url alone means openai)."
FORMAT_HELP = f"Dataset format: {', '.join(available_formats())} (default: auto-detect)."


def batch(
    dataset: Path = typer.Argument(..., help="Questions: MMAU JSON, MMAR JSON/JSONL or audiorouter JSONL."),
    out: Path = typer.Option(..., "--out", "-o", help="Predictions JSON (the dataset rows + prediction keys)."),
    router_dir: Optional[Path] = typer.Option(None, "--router", help="Router folder (default: the bundled router)."),
    precision: str = typer.Option("int8", "--precision", help="Router weights: int8 or fp32."),
    reasoner_name: Optional[str] = typer.Option(None, "--reasoner", help=REASONER_HELP),
    reasoner_url: Optional[str] = typer.Option(None, "--reasoner-url", help="OpenAI-compatible base URL."),
    model: Optional[str] = typer.Option(None, "--model", "--reasoner-model", help="Reasoner model id (served name or local folder)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Reasoner request timeout, seconds."),
    retries: Optional[int] = typer.Option(None, "--retries", help="Reasoner retries after a timeout/5xx (default: back-end's)."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Folder audio paths are relative to (default: the dataset's folder)."),
    fmt: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions."),
    concurrency: int = typer.Option(8, "--concurrency", help="Questions whose reasoner requests go out together."),
    max_failures: int = typer.Option(5, "--max-failures", help="Stop after this many consecutive reasoner failures."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute tools and re-ask the reasoner."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Route every question, run the chosen tool, ask the reasoner; write benchmark predictions."""
    with friendly_errors():
        from cli import datasets, pipeline, render

        config = pipeline.ReasonerConfig.from_cli(reasoner_name, reasoner_url, model, timeout, retries, concurrency)
        if not config.enabled:
            raise ValueError(f"batch needs a reasoner: {pipeline.HOW_TO_ADD_A_REASONER}")
        ds = datasets.load_dataset(dataset, fmt=fmt, audio_root=audio_root, limit=limit)
        router = pipeline.load_router(router_dir, precision)
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
                summary, rows = pipeline.batch(ds, router, reasoner, out,
                                               router_name=pipeline.router_label(router_dir),
                                               use_cache=not no_cache, max_failures=max_failures,
                                               chunk_size=concurrency, on_row=on_row)
            finally:
                reasoner.close()
            bar.update(task, completed=len(ds))
        report = pipeline.batch_report(ds, rows)
        doc = {"predictions": str(out), "dataset": str(dataset), "format": ds.format,
               "questions": summary.total, "skipped_done": summary.skipped_done, "processed": summary.processed,
               "reasoner_requests": summary.server_calls, "reasoner_cache_hits": summary.cache_hits,
               "report": report}
        if as_json:
            render.print_json(doc)
            return
        rows_out = [("questions", str(report["rows"])), ("answered", str(report["answered"])),
                    ("error rows", str(report["errors"])), ("no choice matched", str(report["unmatched"])),
                    ("tool-call rate", render.pct(report["tool_call_rate"])),
                    ("reasoner requests / cache hits", f"{summary.server_calls} / {summary.cache_hits}")]
        if report["accuracy"] is not None:
            rows_out.append((f"accuracy (n={report['scored']})", render.pct(report["accuracy"])))
            for g, v in report["per_group"].items():
                rows_out.append((f"  {g} (n={v['n']})", render.pct(v["accuracy"])))
        render.out.print(render.summary_table(f"batch -> {out}", rows_out))
        render.note("score with the benchmark's own script: MMAU `python evaluation.py --input "
                         f"{out}` (key model_prediction/model_output), MMAR (key answer_prediction)")


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
