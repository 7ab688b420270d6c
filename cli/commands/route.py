"""`audiorouter route`: one question -> routing decision -> tool evidence -> (optional) answer."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli import options as opt
from cli.errors import friendly_errors


def parse_choices(text: str | None) -> list[str] | None:
    """'A|B|C' -> ['A', 'B', 'C']; None/blank -> None; an empty or repeated option is a usage error."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split("|")]
    if any(not p for p in parts):
        raise ValueError(f'--choices {text!r} has an empty option; separate non-empty options with "|", '
                         'e.g. --choices "yes|no"')
    if len(parts) < 2:
        raise ValueError(f'--choices {text!r} has one option; give at least two separated by "|"')
    seen: dict[str, str] = {}
    for p in parts:
        key = " ".join(p.split()).casefold()  # answers are matched case- and space-insensitively
        if key in seen:
            raise ValueError(f'--choices {text!r} lists {p!r} twice; give each option once '
                             "(an answer could not tell the copies apart)")
        seen[key] = p
    return parts


def route(
    question: str = typer.Argument(..., help="The question about the audio."),
    audio: Path = typer.Option(..., "--audio", "-a", help="Audio clip (wav/flac/ogg/mp3)."),
    choices: Optional[str] = typer.Option(None, "--choices", "-c", help='Options separated by "|", e.g. "yes|no".'),
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
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the tool output (still stored)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Route one question: decision + probabilities, the chosen tool's output, and the answer."""
    with friendly_errors():
        from cli import pipeline, render

        opts = parse_choices(choices)
        config = pipeline.ReasonerConfig.from_cli(reasoner_name, reasoner_url, model, timeout, retries,
                                                  audio_part=audio_part)
        if config.enabled and not opts:
            raise ValueError('a reasoner answers multiple-choice questions: add --choices "A|B|C"')
        sha = pipeline.check_audio(audio)               # bad audio: one line, before any routing
        router = pipeline.load_router(router_dir, precision, margin, max_tool_rate)
        pipeline.check_router_tools(router)              # routed names must be toolcache tools
        reasoner = config.create() if config.enabled else None
        try:
            # A failing reasoner keeps the decision and the evidence: printed, then the error line.
            doc, failure = pipeline.route_question_keeping_partial(
                router, question, opts, audio, router_name=pipeline.router_label(router_dir),
                reasoner=reasoner, use_cache=not no_cache, audio_sha256=sha)
        finally:
            if reasoner is not None:
                reasoner.close()
        if as_json:
            render.print_json(doc)
        else:
            _print(doc, failure is None)
        if failure is not None:
            raise failure  # friendly_errors: one line on stderr, exit 3 (peer) or 2 (configuration)


def _print(doc: dict, answered: bool) -> None:
    from cli import pipeline, render

    o = render.out
    o.print(render.routing_table(doc["routing"]))
    if doc["evidence"] is None:
        render.note("direct: no tool run (the reasoner answers from the audio alone)")
    else:
        o.print(render.evidence_table(doc["evidence"]))
    if doc["answer"] is not None:
        o.print(render.answer_table(doc["answer"]))
    elif answered:
        render.note(f"no reasoner configured: stopping at the evidence. To get an answer, "
                    f"{pipeline.HOW_TO_ADD_A_REASONER}")
    else:
        render.note("no answer: the reasoner failed (error below); the decision and evidence above stand")
    t = doc["timings"]
    render.note(f"timings: routing {t['routing_ms']:.1f} ms, tool {t['tool_ms']:.1f} ms, "
                f"reasoner {t['reasoner_ms']:.1f} ms, total {t['total_ms']:.1f} ms")


def register(app: typer.Typer) -> None:
    app.command("route")(route)
