"""Shared rich rendering for the pipeline commands: tables on stdout, progress bars on stderr."""
from __future__ import annotations

import json
import sys
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

# stdout for results, stderr for progress and notes (so `--json` stdout stays one document).
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(doc: Any) -> None:
    """One JSON document on stdout, nothing else (plain print: rich would wrap long lines)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A plain line on stdout, never wrapped (commands in it stay copy-pasteable)."""
    out.print(text, soft_wrap=True, markup=False)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def compact(value: Any, limit: int = 160) -> str:
    """A one-cell rendering of a JSON value, cut at `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress():
    """A rich progress bar on stderr with a count column (M/N) and elapsed/remaining time."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err, transient=True)  # the summary table replaces it


def routing_table(routing: Mapping[str, Any]) -> Table:
    t = Table(title=f"routing ({routing['router']} router, {routing['elapsed_ms']:.1f} ms)", title_justify="left")
    t.add_column("action")
    t.add_column("probability", justify="right")
    t.add_column("chosen", justify="center")
    for action, p in sorted(routing["probs"].items(), key=lambda kv: -kv[1]):
        t.add_row(action, f"{p:.3f}", "✓" if action == routing["action"] else "")
    return t


def evidence_table(evidence: Mapping[str, Any]) -> Table:
    status = "cached" if evidence.get("cached") else "computed"
    t = Table(title=f"tool {evidence.get('tool')}: {status} in {1000.0 * float(evidence.get('elapsed_s', 0.0)):.1f} ms",
              title_justify="left", show_header=True)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    t.add_row("backend", str(evidence.get("backend")))
    t.add_row("cached", str(bool(evidence.get("cached"))).lower())
    result = evidence.get("result") or {}
    for key, value in result.items():
        t.add_row(str(key), compact(value, 400))
    if evidence.get("limits"):
        t.add_row("limits", str(evidence["limits"]))
    return t


def answer_table(answer: Mapping[str, Any]) -> Table:
    status = "cached" if answer.get("cached") else f"{1000.0 * float(answer.get('elapsed_s') or 0.0):.0f} ms"
    t = Table(title=f"answer ({status})", title_justify="left")
    t.add_column("field")
    t.add_column("value", overflow="fold")
    t.add_row("choice", str(answer.get("choice")))
    t.add_row("matched_by", str(answer.get("matched_by")))
    t.add_row("raw", compact(answer.get("raw") or "", 400))
    t.add_row("model", str(answer.get("model")))
    return t


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t
