"""Tool-alone accuracy on real MMAU clips, per question group, next to the direct systems.

    python bench/bench_tools_real.py CLIPS_DIR                      # every group
    python bench/bench_tools_real.py CLIPS_DIR --groups tempo_bpm chords key
    python bench/bench_tools_real.py CLIPS_DIR --table T.jsonl --json > out.json

CLIPS_DIR holds the MMAU test-mini clips named by the table's `audio` field (no licence: never
commit them; this script only reads them). Rows whose clip is absent are counted as `missing`
and left out of n. Without CLIPS_DIR the script prints one `skipped:` line and exits 0.

Each question of the table (default: the bundled textrouter/data/mmau-mini-outcomes-dev.jsonl) is
put in the first group of GROUPS whose `match` accepts it (rules on task, sub_category, question
text and choice shapes: see each matcher's docstring; a row in no group is not counted). Each
group names the tools it needs; they run through `toolcache.run`, so a rerun is served by the
cache. A deterministic answerer then picks the choice the tool output supports:

    answer(row: dict, envelopes: dict[str, dict]) -> int | None

`row` is the table line, `envelopes` maps tool name -> `toolcache.run` envelope for the row's clip
(a tool that failed or is not registered is absent). It returns the chosen choice index or None
(no evidence, or a tie): None counts as wrong. Music answerers are in bench/answerers_music.py.
Sound/speech answerers come from bench/answerers_sound_speech.py when it exists: it defines
`ANSWERERS: dict[group name, answer]` and may define `GROUP_TOOLS: dict[group name, list of
(tool, params or None)]` to change which tools a group runs; groups it does not define fall back to
bench/answerers_baseline.py.

Columns: n (rows with a clip), answered (answerer returned an index), tool alone (correct / n),
chance (mean 1/len(choices)), qwen2 / r1 (the direct systems' accuracy on the same n rows, from
the table's outcomes), and complementarity: rows where the direct system is wrong and the tool
alone right. Extra per-group metrics (tempo within 8 %) are printed under the table.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import answerers_baseline as base  # noqa: E402
import answerers_music as music  # noqa: E402

DEFAULT_TABLE = REPO / "textrouter" / "data" / "mmau-mini-outcomes-dev.jsonl"
DIRECT = ("qwen2_audio_direct", "r1_aqa_direct")
Answerer = Callable[[dict, dict], "int | None"]


@dataclass(frozen=True)
class Group:
    """One question group: which rows (`match`), which tools (name, params or None = defaults),
    which answerer, and optional extra metrics(row, envelopes) -> {name: bool}."""

    name: str
    description: str
    match: Callable[[dict], bool]
    tools: tuple[tuple[str, dict | None], ...]
    answer: Answerer
    metrics: Callable[[dict, dict], dict] | None = field(default=None)


# ------------------------------------------------------------------------------------ matchers
def _q(row: dict) -> str:
    return row["question"]


def is_tempo_bpm(row: dict) -> bool:
    """Music; the question says tempo/bpm; every choice is a number (optionally 'beats per minute')."""
    return (row["task"] == "music" and re.search(r"tempo|bpm", _q(row), re.I) is not None
            and all(music.parse_bpm_choice(c) is not None for c in row["choices"]))


def is_tempo_marking(row: dict) -> bool:
    """Music; the question says tempo; >= 2 choices carry an Italian marking or slow/moderate/fast."""
    return (row["task"] == "music" and re.search(r"tempo", _q(row), re.I) is not None
            and sum(music.marking_bpm(c) is not None for c in row["choices"]) >= 2)


def is_key(row: dict) -> bool:
    """Music; the question mentions key/tonic/dominant/harmonic role|function and the choices are
    scale roles (Tonic, Dominant, ...), chords, or key names."""
    if row["task"] != "music" or not re.search(r"\bkey\b|tonic|dominant|harmonic (role|function)", _q(row), re.I):
        return False
    ch = row["choices"]
    roles = all(c.strip().lower() in music.ROLE_DEGREES for c in ch)
    chords = sum(music.parse_chord(c) is not None for c in ch) >= 2
    keys = all(re.match(r"\s*[A-G][#b]?\s*(major|minor)\s*$", c, re.I) for c in ch)
    return roles or chords or keys


def is_chords(row: dict) -> bool:
    """Music; the question says chord; the choices are chords (>= 2), time intervals or numbers."""
    if row["task"] != "music" or "chord" not in _q(row).lower():
        return False
    ch = row["choices"]
    return (sum(music.parse_chord(c) is not None for c in ch) >= 2 or all(music._interval(c) for c in ch)
            or all(music._number(c) is not None for c in ch))


_SPEAKER_COUNT = re.compile(r"how many (speakers|individuals|people|persons|participants)|count of speakers|"
                            r"number of (speakers|participants|people)", re.I)


def is_speaker_count(row: dict) -> bool:
    """Speech; sub_category Counting, or the question asks how many speakers/people/participants."""
    return row["task"] == "speech" and (row["sub_category"] == "Counting" or bool(_SPEAKER_COUNT.search(_q(row))))


def is_speech_word(row: dict) -> bool:
    """Speech; sub_category Phonemic Stress Pattern Analysis or Phonological Sequence Decoding."""
    return row["task"] == "speech" and row["sub_category"] in ("Phonemic Stress Pattern Analysis",
                                                               "Phonological Sequence Decoding")


def is_speech_content(row: dict) -> bool:
    """Speech; what was said: Conversational Fact Retrieval, Event-Based Knowledge Retrieval, Key
    highlight Extraction, Multi Speaker Role Mapping, Dissonant Emotion Interpretation."""
    return row["task"] == "speech" and row["sub_category"] in (
        "Conversational Fact Retrieval", "Event-Based Knowledge Retrieval", "Key highlight Extraction",
        "Multi Speaker Role Mapping", "Dissonant Emotion Interpretation")


_TEMPORAL = re.compile(r"longest|shortest|how many times|count the occurrences|number of times|"
                       r"\b(first|last)\b.*\bsound|\bsound\b.*\b(first|last)\b", re.I)


def is_sound_temporal(row: dict) -> bool:
    """Sound; sub_category Temporal Event Reasoning, or order/count/duration words in the question."""
    return row["task"] == "sound" and (row["sub_category"] == "Temporal Event Reasoning"
                                       or bool(_TEMPORAL.search(_q(row))))


def is_sound_events(row: dict) -> bool:
    """Sound; every other sound question (what is heard, scenes, sources)."""
    return row["task"] == "sound"


# ------------------------------------------------------------------------------------ registry
def build_groups() -> dict[str, Group]:
    """The group registry (first match wins, in this order), with F's sound/speech answerers if present."""
    try:
        ss = importlib.import_module("answerers_sound_speech")
    except ImportError:
        ss = None
    answers = dict(base.ANSWERERS)
    answers.update(getattr(ss, "ANSWERERS", {}) or {})
    tools_over = getattr(ss, "GROUP_TOOLS", {}) or {}

    def tools(name: str, default: tuple) -> tuple:
        return tuple((t, p) for t, p in tools_over.get(name, default))

    af, chords = ("audio_features", None), ("chords", None)
    groups = [
        Group("tempo_bpm", "tempo in BPM", is_tempo_bpm, (af,), music.answer_tempo_bpm, music.tempo_metrics),
        Group("tempo_marking", "tempo marking/descriptor", is_tempo_marking, (af,), music.answer_tempo_marking),
        Group("key", "key / scale-degree role", is_key, (chords, af), music.answer_key),
        Group("chords", "chord names, times, durations", is_chords, (chords,), music.answer_chords),
        Group("sound_temporal", "sound order/count/duration", is_sound_temporal,
              tools("sound_temporal", (("sound_temporal", None), ("sound_duration", None))), answers["sound_temporal"]),
        Group("sound_events", "sound events", is_sound_events, tools("sound_events", (("sound_events", None),)),
              answers["sound_events"]),
        Group("speaker_count", "speaker count", is_speaker_count, tools("speaker_count", (("asr", None),)),
              answers["speaker_count"]),
        Group("speech_word", "speech word-level", is_speech_word, tools("speech_word", (("asr", None),)),
              answers["speech_word"]),
        Group("speech_content", "speech content", is_speech_content, tools("speech_content", (("asr", None),)),
              answers["speech_content"]),
    ]
    return {g.name: g for g in groups}


def with_params(groups: dict[str, Group], specs: list[str]) -> dict[str, Group]:
    """Groups whose tool calls carry the `TOOL.KEY=VALUE` overrides (values parsed as JSON when
    they are JSON, e.g. numbers, else kept as strings)."""
    from dataclasses import replace

    over: dict[str, dict] = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        tool, dot, name = key.partition(".")
        if not (eq and dot and tool and name):
            raise ValueError(f"--param {spec!r} is not TOOL.KEY=VALUE; write e.g. chords.backend=chordino")
        try:
            over.setdefault(tool, {})[name] = json.loads(value)
        except ValueError:
            over.setdefault(tool, {})[name] = value
    if not over:
        return groups
    return {n: replace(g, tools=tuple((t, {**(p or {}), **over[t]} if t in over else p) for t, p in g.tools))
            for n, g in groups.items()}


def available_groups() -> list[str]:
    return list(build_groups())


def assign(rows: list[dict], groups: dict[str, Group]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {name: [] for name in groups}
    for row in rows:
        for g in groups.values():
            if g.match(row):
                out[g.name].append(row)
                break
    return out


# ------------------------------------------------------------------------------------ running
def run_tools(path: Path, tools, registered: set[str]) -> tuple[dict, list[str]]:
    import toolcache
    from toolcache.errors import ToolcacheError

    envs, failed = {}, []
    for name, params in tools:
        if name not in registered:
            failed.append(f"{name}: not registered")
            continue
        try:
            envs[name] = toolcache.run(name, path, params)
        except ToolcacheError as exc:
            failed.append(f"{name}: {exc}")
    return envs, failed


def evaluate(clips: Path, rows_by_group: dict[str, list[dict]], groups: dict[str, Group], limit: int | None,
             progress) -> tuple[list[dict], list[dict]]:
    from toolcache.registry import available_tools

    registered = set(available_tools())
    summary, details = [], []
    todo = {g: (rows[:limit] if limit else rows) for g, rows in rows_by_group.items()}
    task = progress.add_task("tool-alone", total=sum(len(r) for r in todo.values()))
    for gname, rows in todo.items():
        g = groups[gname]
        n = missing = answered = right = 0
        direct = {d: 0 for d in DIRECT}
        compl = {d: 0 for d in DIRECT}
        chance = 0.0
        metric_sums: dict[str, int] = {}
        failures = 0
        versions: set[str] = set()
        for row in rows:
            progress.update(task, advance=1, description=f"{gname}")
            path = clips / row["audio"]
            if not path.is_file():
                missing += 1
                continue
            n += 1
            envs, failed = run_tools(path, g.tools, registered)
            failures += bool(failed)
            versions.update(f"{e['tool']}@{e['tool_version']}" for e in envs.values())
            pick = g.answer(row, envs)
            ok = pick is not None and row["choices"][pick] == row["answer"]
            answered += pick is not None
            right += ok
            chance += 1.0 / len(row["choices"])
            for d in DIRECT:
                dv = int(row["outcomes"].get(d, 0))
                direct[d] += dv
                compl[d] += int(ok and not dv)
            extra = g.metrics(row, envs) if g.metrics else {}
            for k, v in extra.items():
                metric_sums[k] = metric_sums.get(k, 0) + int(bool(v))
            details.append({"group": gname, "id": row["id"], "pick": pick, "correct": bool(ok),
                            "answer": row["answer"], "failed": failed, **extra})
        summary.append({
            "group": gname, "description": g.description, "tools": sorted(versions) or [t for t, _ in g.tools],
            "n": n, "missing": missing, "answered": answered, "failed": failures,
            "tool_alone": right / n if n else None, "correct": right,
            "chance": chance / n if n else None,
            **{d: direct[d] / n if n else None for d in DIRECT},
            **{f"{d}_wrong_tool_right": compl[d] for d in DIRECT},
            "metrics": metric_sums,
        })
    return summary, details


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(summary: list[dict], console) -> None:
    from rich.table import Table

    t = Table(title="Tool-alone accuracy on real clips (ties and no evidence count wrong)")
    for col in ("group", "tools", "n", "missing", "answered", "tool alone", "chance", "qwen2 direct",
                "r1 direct", "qwen2 wrong & tool right", "r1 wrong & tool right"):
        t.add_column(col, justify="left" if col in ("group", "tools") else "right")
    for s in summary:
        t.add_row(s["group"], ", ".join(s["tools"]), str(s["n"]), str(s["missing"]), str(s["answered"]),
                  _fmt(s["tool_alone"]), _fmt(s["chance"]), _fmt(s[DIRECT[0]]), _fmt(s[DIRECT[1]]),
                  str(s[f"{DIRECT[0]}_wrong_tool_right"]), str(s[f"{DIRECT[1]}_wrong_tool_right"]))
    console.print(t)
    for s in summary:
        for k, v in s["metrics"].items():
            console.print(f"{s['group']}: {k} {v}/{s['n']}")
        if s["failed"]:
            console.print(f"{s['group']}: {s['failed']} rows with a failed or unregistered tool")


def main(argv: list[str] | None = None) -> int:
    groups = build_groups()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="?", help="folder of MMAU clips named by the table's `audio` field")
    ap.add_argument("--table", default=str(DEFAULT_TABLE), help="outcome table (JSONL)")
    ap.add_argument("--groups", nargs="+", choices=list(groups), help="groups to run (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many rows per group")
    ap.add_argument("--json", action="store_true", help="print {summary, details} JSON instead of the table")
    ap.add_argument("--param", action="append", default=[], metavar="TOOL.KEY=VALUE",
                    help="override a tool parameter in every group (repeatable), e.g. chords.backend=chordino")
    ap.add_argument("--tempo-spread", action="store_true",
                    help="also read audio_features on every music clip of the table: median tempo and the share "
                         "in 110-150 BPM (an estimator pulled toward 120 piles up there)")
    args = ap.parse_args(argv)
    try:
        groups = with_params(groups, args.param)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.clips or not Path(args.clips).is_dir():
        print(f"skipped: clips folder {args.clips!r} not found; pass the folder holding the MMAU clips", file=sys.stderr)
        return 0
    try:
        rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        print(f"error: cannot read table {args.table}: {exc}; pass a JSONL outcome table with --table", file=sys.stderr)
        return 2
    by_group = assign(rows, groups)
    if args.groups:
        by_group = {g: by_group[g] for g in args.groups}
    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    with Progress(console=err, transient=True) as progress:
        summary, details = evaluate(Path(args.clips), by_group, groups, args.limit, progress)
        spread = tempo_spread(Path(args.clips), rows, progress) if args.tempo_spread else None
    if args.json:
        print(json.dumps({"table": str(args.table), "summary": summary, "details": details,
                          **({"tempo_spread": spread} if spread else {})}, indent=1))
    else:
        print_table(summary, Console(width=200) if not sys.stdout.isatty() else Console())
        if spread:
            print(f"tempo over {spread['clips']} music clips ({spread['with_tempo']} with a tempo, audio_features "
                  f"v{spread['version']}): median {spread['median_bpm']:.1f} BPM, {spread['share_110_150']:.0%} "
                  f"in 110-150 BPM")
    return 0


def tempo_spread(clips: Path, rows: list[dict], progress) -> dict:
    """audio_features' tempo over the table's music clips present in `clips` (through the cache)."""
    import statistics

    import toolcache
    from toolcache.registry import get_tool

    paths = sorted({clips / r["audio"] for r in rows if r.get("task") == "music" and (clips / r["audio"]).is_file()})
    job = progress.add_task("audio_features on music clips", total=len(paths))
    bpms = []
    for p in paths:
        try:
            bpm = toolcache.run("audio_features", p)["result"]["tempo_bpm"]
        except toolcache.ToolcacheError:
            bpm = None  # an undecodable clip: counted in clips, not in with_tempo
        if bpm:
            bpms.append(bpm)
        progress.advance(job)
    return {"clips": len(paths), "with_tempo": len(bpms), "version": get_tool("audio_features").version,
            "median_bpm": statistics.median(bpms) if bpms else float("nan"),
            "share_110_150": sum(110 <= b <= 150 for b in bpms) / len(bpms) if bpms else 0.0}


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun: finished tool outputs are cached")
