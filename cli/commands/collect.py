"""`audiorouter collect`: run the reasoner directly and with each tool -> an outcome table to train on."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli import options as opt
from cli.errors import friendly_errors


def collect(
    dataset: Path = typer.Argument(..., help="Questions: MMAU JSON, MMAR JSON/JSONL or audiorouter JSONL."),
    out: Path = typer.Option(..., "--out", "-o", help="Outcome table to write (JSONL, appended, resumable)."),
    tools: str = typer.Option("asr", "--tools", help="Comma-separated toolcache tools to collect next to direct (see `audiorouter tools list`)."),
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
    no_cache: bool = typer.Option(False, "--no-cache", help="Ask the reasoner even if its answer is cached."),
    as_json: bool = opt.AS_JSON,
) -> None:
    """Build an outcome table: per question, is the reasoner right directly and with each tool?"""
    with friendly_errors():
        from cli import collecting, datasets, pipeline, render

        tool_names = pipeline.check_tools(tools.split(","))
        if not tool_names:
            raise ValueError("--tools is empty; name at least one tool, e.g. --tools asr")
        config = pipeline.ReasonerConfig.from_cli(reasoner_name, reasoner_url, model, timeout, retries, concurrency,
                                                  audio_part=audio_part)
        if not config.enabled:
            raise ValueError(f"collect needs a reasoner: {pipeline.HOW_TO_ADD_A_REASONER}")
        ds = datasets.load_dataset(dataset, fmt=fmt, audio_root=audio_root, limit=limit)
        reasoner = config.create()
        counts = {"ok": 0, "errors": 0}
        with render.progress() as bar:
            task = bar.add_task("collect", total=len(ds), status="")

            def on_row(row: dict) -> None:
                counts["errors" if "error" in row else "ok"] += 1
                bar.update(task, advance=1, status=f"ok {counts['ok']} · errors {counts['errors']}")

            try:
                summary = collecting.collect(ds, reasoner, tool_names, out, use_cache=not no_cache,
                                             max_failures=max_failures, chunk_size=concurrency, on_row=on_row)
            finally:
                reasoner.close()
            bar.update(task, completed=len(ds))  # rows done by an earlier run count as complete
        report = collecting.collect_report(out)
        doc = {"table": str(out), "errors_file": str(out) + ".errors.jsonl", "dataset": str(dataset),
               "format": ds.format, "questions": summary.total, "skipped_done": summary.skipped_done,
               "processed": summary.processed, "errors": summary.errors, "unmatched": summary.unmatched,
               "reasoner_requests": summary.server_calls, "reasoner_cache_hits": summary.cache_hits,
               "reasoner_cache_note": summary.cache_note, "table_report": report,
               "train_with": f"audiorouter train {out} --direct direct "
                             + " ".join(f"--tool {t}={t}" for t in tool_names)}
        if as_json:
            render.print_json(doc)
            return
        rows = [("questions", str(summary.total)), ("already done (skipped)", str(summary.skipped_done)),
                ("processed now", str(summary.processed)), ("error rows", str(summary.errors)),
                ("reasoner requests / cache hits", f"{summary.server_calls} / {summary.cache_hits}"),
                ("table rows", str(report["rows"]))]
        for a in report["actions"]:
            rows.append((f"accuracy {a}", render.pct(report["accuracy"][a])))
            rows.append((f"  no choice matched ({a})", str(report["unmatched"][a])))
        rows.append(("oracle (best action per question)", render.pct(report["oracle"])))
        render.out.print(render.summary_table(f"collect -> {out}", rows))
        if summary.cache_note:
            render.note(summary.cache_note)
        if summary.errors:
            render.note(f"{summary.errors} error rows in {out}.errors.jsonl (re-run to retry them)")
        render.note(f"train a router on it: {doc['train_with']}")


def register(app: typer.Typer) -> None:
    app.command("collect")(collect)
