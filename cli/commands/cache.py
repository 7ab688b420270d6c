"""`audiorouter cache stats|clear|warm`: inspect, empty and precompute the tool-output cache."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from cli.errors import friendly_errors

cache_app = typer.Typer(help="The tool-output cache: stats, clear, warm (precompute).", no_args_is_help=True)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n} B"


def split_tools(items: List[str] | None) -> list[str] | None:
    """['asr,chords', 'sound_events'] -> ['asr', 'chords', 'sound_events'] (None: not given)."""
    if not items:
        return None
    names: list[str] = []
    for item in items:
        for name in item.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


@cache_app.command("stats")
def stats(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Cache path, entries and bytes per tool, total size and the size limit."""
    with friendly_errors():
        from toolcache import Cache

        s = Cache().stats()
        if as_json:
            _print_json(s)
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"cache {s['path']}", title_justify="left")
        t.add_column("namespace")
        t.add_column("tool")
        t.add_column("entries", justify="right")
        t.add_column("bytes", justify="right")
        for r in s["by_tool"]:
            t.add_row(r["namespace"], r["tool"], str(r["entries"]), _mb(r["bytes"]))
        t.add_section()
        t.add_row("total", "", str(s["entries"]), _mb(s["bytes"]))
        t.caption = (f"limit {_mb(s['max_bytes'])} (AUDIOROUTER_CACHE_MAX_MB), file on disk {_mb(s['file_bytes'])}, "
                     f"{s['memo_files']} file hashes memoised")
        Console(highlight=False).print(t)


@cache_app.command("clear")
def clear(
    tool: Optional[str] = typer.Option(None, "--tool", help="Only this tool's entries."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Only 'tool' or 'reasoner' entries."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Delete cache entries (all of them, or one tool's / one namespace's)."""
    with friendly_errors():
        from toolcache import Cache

        c = Cache()
        removed = c.clear(namespace=namespace, tool=tool)
        if as_json:
            _print_json({"path": str(c.path), "removed": removed, "tool": tool, "namespace": namespace})
            return
        what = " ".join(x for x in (f"tool={tool}" if tool else "", f"namespace={namespace}" if namespace else "") if x)
        print(f"removed {removed} entries{' (' + what + ')' if what else ''} from {c.path}")


@cache_app.command("warm")
def warm(
    source: Path = typer.Argument(..., help="A folder of audio (recursive *.wav/*.flac/*.mp3/*.ogg) or a JSONL/JSON dataset with an 'audio' field."),
    tools: Optional[List[str]] = typer.Option(None, "--tools", "-t", help="Tools to precompute, comma-separated or repeated (default: all)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Processes (default: all cores)."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Folder the dataset's audio paths are relative to (default: the dataset's folder)."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Analyse at most this many seconds per clip (default $AUDIOROUTER_MAX_SECONDS or 600)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Precompute tool outputs for many clips; re-running resumes (cached outputs are skipped)."""
    with friendly_errors():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        from toolcache import available_tools
        from toolcache.audio import validate_max_seconds
        from toolcache.warm import check_warm_args, collect_audio, warm as warm_files

        names = split_tools(tools) or available_tools()
        workers = check_warm_args(names, workers)
        if max_seconds is not None:
            validate_max_seconds(max_seconds, "--max-seconds")
        files = collect_audio(source, audio_root)
        err = Console(stderr=True, highlight=False)
        counts = {"computed": 0, "cached": 0, "failed": 0}
        progress = Progress(TextColumn("[bold]warm"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=err, transient=False)
        with progress:
            task = progress.add_task("warm", total=len(files), status="")

            def on_file(res: dict) -> None:
                for st in res["status"].values():
                    counts[st] += 1
                progress.update(task, advance=1, status=(f"computed {counts['computed']} cached {counts['cached']}"
                                                         f" failed {counts['failed']}"))

            summary = warm_files(files, names, workers=workers, max_seconds=max_seconds, on_file=on_file)
        if as_json:
            _print_json(summary)
        else:
            from rich.table import Table

            t = Table(title=f"warmed {summary['files']} files x {len(names)} tools in {summary['elapsed_s']:.1f} s "
                            f"({summary['workers']} workers)", title_justify="left")
            for col in ("computed", "already cached", "failed"):
                t.add_column(col, justify="right")
            t.add_row(str(summary["computed"]), str(summary["cached"]), str(summary["failed"]))
            Console(highlight=False).print(t)
        if summary["failed"]:
            first = summary["failures"][0]
            for f in summary["failures"][:5]:
                err.print(f"failed: {f['tool']} on {f['path']}: {f['error']}", highlight=False, soft_wrap=True)
            raise ValueError(
                f"{summary['failed']} of {summary['files'] * len(names)} tool outputs failed "
                f"(first: {first['tool']} on {first['path']}); the others are cached: fix or remove those "
                f"files and re-run to resume"
            )


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
