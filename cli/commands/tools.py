"""`audiorouter tools list|run`: what each audio tool measures, and one tool's output on one clip."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional

import typer

from cli.errors import friendly_errors

tools_app = typer.Typer(help="Audio tools: list them, run one on a clip (cached).", no_args_is_help=True)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _print_json(doc: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _console():
    from rich.console import Console

    return Console(highlight=False)


def coerce_value(name: str, raw: str, default: Any) -> Any:
    """Parse a `--param name=raw` value to the type of the tool's default (JSON for lists/None)."""
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"--param {name}={raw!r} must be a boolean: true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--param {name}={raw!r} must be an integer, e.g. {name}={default}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--param {name}={raw!r} must be a number, e.g. {name}={default}") from None
    if isinstance(default, str):
        return raw
    try:  # lists, dicts, None defaults: JSON if it parses, else the plain string
        return json.loads(text)
    except json.JSONDecodeError:
        return raw


def parse_params(tool: str, items: List[str] | None) -> dict:
    """['k=v', ...] -> {k: typed v}; names are checked against the tool's parameters."""
    from toolcache import get_tool

    spec = get_tool(tool)
    valid = ", ".join(sorted(spec.default_params)) or "none"
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param {item!r} is not NAME=VALUE; valid names for {tool}: {valid}")
        name, raw = item.split("=", 1)
        name = name.strip()
        if name not in spec.default_params:
            raise ValueError(f"tool {tool!r} has no parameter {name!r}; valid parameters: {valid}")
        params[name] = coerce_value(name, raw, spec.default_params[name])
    return params


def tool_rows() -> list[dict]:
    """One dict per registered tool (the `tools list --json` document)."""
    from toolcache import available_tools, get_tool

    rows = []
    for name in available_tools():
        spec = get_tool(name)
        rows.append({
            "name": name,
            "description": spec.description,
            "backend": spec.backend(dict(spec.default_params)),
            "version": str(spec.version),
            "sample_rate": int(spec.sample_rate),
            "params": dict(spec.default_params),
            "limits": spec.limits,
        })
    return rows


@tools_app.command("list")
def list_tools(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Each tool: name, what it measures, backend/model, version, parameters."""
    with friendly_errors():
        rows = tool_rows()
        if as_json:
            _print_json({"tools": rows})
            return
        from rich.table import Table
        from rich.text import Text

        # Three columns, so an 80-column terminal still has ~50 columns for the text: words wrap at
        # spaces and are never cut (name and version never wrap; "fold" only cuts a single word
        # longer than the whole column). Text objects: descriptions are not parsed as markup.
        t = Table(title=f"{len(rows)} audio tools", title_justify="left", show_lines=True)
        t.add_column("tool", no_wrap=True, min_width=max([len(r["name"]) for r in rows] + [4]))
        t.add_column("version", no_wrap=True, justify="right")
        t.add_column("measures / backend / params", overflow="fold", ratio=1)
        for r in rows:
            params = " ".join(f"{k}={json.dumps(v)}" for k, v in r["params"].items()) or "-"
            details = Text(r["description"])
            details.append("\nbackend ", style="dim")
            details.append(str(r["backend"]))
            details.append("\nparams ", style="dim")
            details.append(params)
            t.add_row(r["name"], r["version"], details)
        con = _console()
        con.print(t)
        if not rows:
            con.print("no tools registered (toolcache/tools/*.py define SPECS)")


def _render_value(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _records_table(title: str, rows: list[Mapping[str, Any]], max_rows: int = 40):
    """A list of flat dicts (segments, events, chords) as a table; long lists are cut."""
    from rich.table import Table

    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    t = Table(title=f"{title} ({len(rows)})", title_justify="left")
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows[:max_rows]:
        t.add_row(*(_render_value(r.get(c, ""), 120) for c in cols))
    if len(rows) > max_rows:
        t.caption = f"{len(rows) - max_rows} more rows: use --json for all"
    return t


def _tree(label: str, value: Any):
    from rich.tree import Tree

    tree = Tree(label)

    def add(node, v):
        if isinstance(v, Mapping):
            for k, sub in v.items():
                if isinstance(sub, (Mapping, list)) and sub:
                    add(node.add(str(k)), sub)
                else:
                    node.add(f"{k}: {_render_value(sub)}")
        elif isinstance(v, list):
            for i, sub in enumerate(v[:40]):
                if isinstance(sub, (Mapping, list)) and sub:
                    add(node.add(f"[{i}]"), sub)
                else:
                    node.add(_render_value(sub))
            if len(v) > 40:
                node.add(f"… {len(v) - 40} more (use --json)")

    add(tree, value)
    return tree


def render_envelope(env: Mapping[str, Any], audio: Path) -> None:
    """Header table (tool, backend, cache status, audio) then the result as tables/trees."""
    from rich.table import Table

    con = _console()
    status = "served from the cache" if env["cached"] else "computed"
    head = Table(title=f"{env['tool']} on {audio.name}: {status} in {1000 * env['elapsed_s']:.1f} ms",
                 title_justify="left", show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    a = env.get("audio", {})
    head.add_row("cached", str(bool(env["cached"])).lower())
    head.add_row("elapsed_ms", f"{1000 * env['elapsed_s']:.2f}")
    head.add_row("backend", str(env["backend"]))
    head.add_row("version", str(env["tool_version"]))
    if env.get("params"):
        head.add_row("params", _render_value(env["params"]))
    dur = f"{a.get('duration_s', 0):.2f} s analysed of {a.get('original_duration_s', 0):.2f} s"
    if a.get("truncated"):
        dur += f" (truncated at max_seconds={a.get('max_seconds')})"
    head.add_row("audio", f"{dur}, {a.get('original_sample_rate')} Hz, {a.get('channels')} ch")
    head.add_row("audio_sha256", str(env["audio_sha256"]))
    con.print(head)

    result = env.get("result") or {}
    scalars = Table(title="result", title_justify="left")
    scalars.add_column("field", style="bold")
    scalars.add_column("value", overflow="fold")
    nested = []
    for k, v in result.items():
        if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            nested.append(_records_table(k, v))
        elif isinstance(v, (Mapping, list)) and v:
            nested.append(_tree(k, v))
        else:
            scalars.add_row(str(k), _render_value(v, 2000))
    if scalars.row_count:
        con.print(scalars)
    for item in nested:
        con.print(item)
    if env.get("limits"):
        con.print(f"[dim]limits: {env['limits']}[/dim]")


@tools_app.command("run")
def run_tool(
    tool: str = typer.Argument(..., help="Tool name (see `audiorouter tools list`)."),
    audio: Path = typer.Argument(..., help="Audio clip (wav/flac/mp3/ogg)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole output envelope as one JSON document."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute instead of reading the cache (the fresh output is stored)."),
    param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="Tool parameter NAME=VALUE (repeatable)."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Analyse at most this many seconds (default $AUDIOROUTER_MAX_SECONDS or 600; at most 1800)."),
) -> None:
    """Run TOOL on AUDIO and print its structured output (a second run is a cache hit)."""
    with friendly_errors():
        import toolcache

        params = parse_params(tool, param)
        if max_seconds is not None:
            from toolcache.audio import validate_max_seconds

            validate_max_seconds(max_seconds, "--max-seconds")
        env = toolcache.run(tool, str(audio), params=params or None, cache=not no_cache, max_seconds=max_seconds)
        if as_json:
            _print_json(env)
        else:
            render_envelope(env, audio)
        from toolcache.warm import header_warning

        if env.get("cache_error"):
            print(f"warning: computed but not cached: {env['cache_error']}", file=sys.stderr)
        note = header_warning(env)
        if note:  # once, on stderr (stdout stays the table or the JSON document)
            print(f"warning: {audio}: {note}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(tools_app, name="tools")
