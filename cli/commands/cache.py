"""`audiorouter cache stats|clear|compact|warm`: inspect, empty, shrink and precompute the tool-output cache."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from cli.errors import friendly_errors

cache_app = typer.Typer(help="The tool-output cache: stats, clear, compact, warm (precompute), export and import (Parquet).",
                        no_args_is_help=True)


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
    """Cache path, entries and bytes per tool, total size, file size and the size limit (from counters: instant)."""
    with friendly_errors():
        from toolcache import Cache

        s = Cache().stats()
        if as_json:
            _print_json(s)
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"cache {s['path']}{' (read-only)' if s.get('read_only') else ''}", title_justify="left")
        t.add_column("namespace")
        t.add_column("tool")
        t.add_column("entries", justify="right")
        t.add_column("bytes", justify="right")
        for r in s["by_tool"]:
            t.add_row(r["namespace"], r["tool"], str(r["entries"]), _mb(r["bytes"]))
        t.add_section()
        t.add_row("total", "", str(s["entries"]), _mb(s["bytes"]))
        t.caption = (f"limit {_mb(s['max_bytes'])} (AUDIOROUTER_CACHE_MAX_MB; bytes = value + key + per-entry "
                     f"overhead), file on disk {_mb(s['file_bytes'])} ({_mb(s['free_bytes'])} free pages: "
                     f"`audiorouter cache compact` gives them back), {s['memo_files']} file hashes memoised")
        Console(highlight=False).print(t)


@cache_app.command("clear")
def clear(
    tool: Optional[str] = typer.Option(None, "--tool", help="Only this tool's entries."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Only 'tool' or 'reasoner' entries."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Delete cache entries (all of them, or one tool's / one namespace's). A damaged cache file is
    moved aside (kept, renamed) and a new empty one started."""
    with friendly_errors():
        from toolcache import Cache
        from toolcache.errors import CacheCorrupt

        c = Cache()
        moved = None
        try:
            removed = c.clear(namespace=namespace, tool=tool)
        except CacheCorrupt:
            moved = c.move_aside()  # the whole file is suspect, whatever --tool/--namespace said
            removed = 0
            c.stats()  # creates the new, empty cache now (and proves it works)
        if as_json:
            _print_json({"path": str(c.path), "removed": removed, "tool": tool, "namespace": namespace,
                         "damaged_file_moved_to": None if moved is None else str(moved)})
            return
        if moved is not None:
            print(f"the cache {c.path} was damaged: moved it to {moved} (delete that copy when you no longer "
                  f"need it) and started a new, empty cache")
            return
        what = " ".join(x for x in (f"tool={tool}" if tool else "", f"namespace={namespace}" if namespace else "") if x)
        print(f"removed {removed} entries{' (' + what + ')' if what else ''} from {c.path}")


@cache_app.command("compact")
def compact(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Evict least-recently-used entries down to the limit and give freed space back to the disk.

    Works in short transactions, so other processes using the cache are never blocked for long."""
    with friendly_errors():
        from toolcache import Cache

        r = Cache().compact()
        if as_json:
            _print_json(r)
            return
        print(f"compacted {r['path']}: removed {r['removed']} entries, file {_mb(r['file_bytes_before'])} -> "
              f"{_mb(r['file_bytes_after'])} (entries {_mb(r['counted_bytes'])}, limit {_mb(r['max_bytes'])}; "
              f"{r['vacuum']} vacuum, {r['elapsed_s']:.1f} s)")
        if not r["wal_truncated"]:
            print("note: another process kept checkpointing the write-ahead log, so the file has not shrunk "
                  "yet; run `audiorouter cache compact` again when it is idle")


@cache_app.command("warm")
def warm(
    source: Path = typer.Argument(..., help="A folder of audio (recursive *.wav/*.flac/*.mp3/*.ogg) or a JSONL/JSON dataset with an 'audio' field."),
    tools: Optional[List[str]] = typer.Option(None, "--tools", "-t", help="Tools to precompute, comma-separated or repeated (default: all)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Most processes to use (default: all cores; a small job uses fewer, each worker needs 8 files to pay back its start-up)."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Folder the dataset's audio paths are relative to (default: the dataset's folder)."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Analyse at most this many seconds per clip (default $AUDIOROUTER_MAX_SECONDS or 600; at most 1800)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
    engine: str = typer.Option("local", "--engine", help="Where to compute: local (process pool) or ray (Ray Data actor pools; pip install -e '.\\[ray]'). See docs/scale-out.md."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: 'auto' or HOST:PORT of a running Ray cluster (default: a private local runtime)."),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="--engine ray: also write the outputs as Parquet part files into this folder (import them with `cache import`)."),
    local_cache: bool = typer.Option(True, "--local-cache/--no-local-cache", help="--engine ray: store into this machine's cache (default) or only into --parquet."),
) -> None:
    """Precompute tool outputs for many clips; re-running resumes (cached outputs are skipped)."""
    with friendly_errors():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        from toolcache import available_tools
        from toolcache.audio import validate_max_seconds
        from toolcache.warm import WarmStopped, check_warm_args, find_audio, missing_message, warm as warm_files

        names = split_tools(tools) or available_tools()
        workers = check_warm_args(names, workers)
        ray_opts = _ray_options(engine, address, parquet, local_cache, workers)
        if max_seconds is not None:
            validate_max_seconds(max_seconds, "--max-seconds")
        found = find_audio(source, audio_root)  # missing dataset clips are listed, the rest warmed
        files = list(found.files)
        err = Console(stderr=True, highlight=False)
        counts = {"computed": 0, "cached": 0, "failed": 0, "skipped": 0}
        progress = Progress(TextColumn("[bold]warm"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=err, transient=False)
        stopped: WarmStopped | None = None
        with progress:
            task = progress.add_task("warm", total=len(files), status="")

            def on_file(res: dict) -> None:
                for st in res["status"].values():
                    counts[st] = counts.get(st, 0) + 1
                progress.update(task, advance=1, status=(f"computed {counts['computed']} cached {counts['cached']}"
                                                         f" failed {counts['failed']}"))

            try:
                if engine == "ray":  # --engine checked before any work, see _ray_options
                    summary = _warm_on_ray(ray_opts, files, names, max_seconds, on_file)
                else:
                    summary = warm_files(files, names, workers=workers, max_seconds=max_seconds, on_file=on_file)
            except WarmStopped as exc:  # print what was stored, then the one-line error
                stopped, summary = exc, exc.summary
        summary["missing"] = list(found.missing)
        if as_json:
            _print_json(summary)
        else:
            from rich.table import Table

            t = Table(title=f"warmed {summary['files']} files x {len(names)} tools in {summary['elapsed_s']:.1f} s "
                            f"({summary['workers']} workers)", title_justify="left")
            cols = ["computed", "already cached", "failed"]
            vals = [summary["computed"], summary["cached"], summary["failed"]]
            if summary.get("skipped"):
                cols.append("not stored")
                vals.append(summary["skipped"])
            if found.missing:
                cols.append("missing files")
                vals.append(len(found.missing))
            for col in cols:
                t.add_column(col, justify="right")
            t.add_row(*(str(v) for v in vals))
            Console(highlight=False).print(t)
        # Each incomplete file is said once (not once per tool).
        for w in summary.get("warnings", [])[:20]:
            err.print(f"warning: {w['path']}: {w['warning']}", highlight=False, soft_wrap=True)
        if len(summary.get("warnings", [])) > 20:
            err.print(f"warning: {len(summary['warnings']) - 20} more incomplete files (see --json)", highlight=False)
        for m in found.missing[:10]:
            err.print(f"missing: {m}", highlight=False, soft_wrap=True)
        if len(found.missing) > 10:
            err.print(f"missing: {len(found.missing) - 10} more (see --json)", highlight=False)
        if stopped is not None:
            raise stopped
        for f in summary["failures"][:5]:
            err.print(f"failed: {f['tool']} on {f['path']}: {f['error']}", highlight=False, soft_wrap=True)
        if summary["failed"]:
            first = summary["failures"][0]
            stored = summary["computed"] + summary["cached"]
            others = f"the other {stored} are cached"  # counted from what was stored, not assumed
            missing = f" ({len(found.missing)} files missing besides)" if found.missing else ""
            raise ValueError(
                f"{summary['failed']} of {summary['files'] * len(names)} tool outputs failed "
                f"(first: {first['tool']} on {first['path']}){missing}; {others}: fix or remove those "
                f"files and re-run to resume"
            )
        if found.missing:
            raise ValueError(missing_message(source, found, audio_root))


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


# ---------------------------------------------------------------- Ray engine and Parquet transfer
def _ray_options(engine: str, address: str | None, parquet: Path | None, local_cache: bool, workers: int):
    """RayWarmOptions for --engine ray (None for local); a bad --engine or a Ray-only option without
    --engine ray is a one-line error before any work."""
    from toolcache.ray_warm import RayWarmOptions, available_engines, require_ray

    if engine not in available_engines():
        raise ValueError(f"--engine {engine!r} is not known; valid: {', '.join(available_engines())}")
    if engine != "ray":
        given = [n for n, v in (("--address", address), ("--parquet", parquet), ("--no-local-cache", not local_cache)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --engine ray; add --engine ray or drop them")
        return None
    require_ray()  # ray missing: `error: ray is not installed ...; pip install -e '.[ray]'`
    return RayWarmOptions(address=address, actors=workers, parquet=None if parquet is None else str(parquet),
                          local_cache=local_cache)


def _warm_on_ray(options, files, names, max_seconds, on_file) -> dict:
    from toolcache.ray_warm import warm_ray

    return warm_ray(files, names, options, max_seconds=max_seconds, on_file=on_file)


@cache_app.command("export")
def export_cmd(
    path: Path = typer.Argument(..., help="Output file, e.g. tools.parquet (written atomically)."),
    tool: Optional[str] = typer.Option(None, "--tool", help="Only this tool's outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Write the cache's tool outputs (keys, envelopes, sizes) to a Parquet file for `cache import` elsewhere."""
    with friendly_errors():
        from toolcache.transfer import export_parquet

        r = export_parquet(path, tool=tool)
        if as_json:
            _print_json(r)
            return
        print(f"exported {r['rows']} tool outputs{' of ' + tool if tool else ''} ({_mb(r['bytes'])} of envelopes) "
              f"to {r['path']} ({_mb(r['file_bytes'])}, {r['elapsed_s']:.1f} s)")


@cache_app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="A file from `cache export`, or a folder of *.parquet (cache warm --engine ray --parquet)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Store verified tool outputs from Parquet into this cache; rows already here are left alone (idempotent),
    rows whose key does not match their envelope are refused."""
    with friendly_errors():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from toolcache.transfer import import_parquet, parquet_files, refused_message

        files = parquet_files(path)
        progress = Progress(TextColumn("[bold]import"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        total = {"files": 0, "rows": 0, "imported": 0, "present": 0, "refused": 0, "stale": 0}
        first = None
        with progress:
            task = progress.add_task("import", total=len(files))
            for f in files:
                r = import_parquet(f)
                for k in total:
                    total[k] += r[k]
                first = first or r["refused_first"]
                progress.update(task, advance=1)
        summary = {"path": str(path), **total, "refused_first": first}
        if as_json:
            _print_json(summary)
        else:
            print(f"imported {summary['imported']} tool outputs from {summary['files']} file(s) ({summary['present']} "
                  f"already in the cache, {summary['refused']} refused"
                  f"{', ' + str(summary['stale']) + ' for other tool versions' if summary['stale'] else ''})")
        if summary["refused"]:
            raise ValueError(refused_message(summary))
