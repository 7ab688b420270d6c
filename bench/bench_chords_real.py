"""`chords` on real clips: how much of music and of speech it labels with chords, and its speed.

    python bench/bench_chords_real.py CLIPS_DIR [--table T] [--per-task 40]

CLIPS_DIR holds the MMAU test-mini clips named by the table's `audio` field (no licence: never
commit them; this script only reads them; without the folder it prints one `skipped:` line and
exits 0). The first `--per-task` distinct music clips and speech clips of the table (default: the
bundled textrouter/data/mmau-mini-outcomes-dev.jsonl) are decoded once and analysed in one run by
three variants of the default `templates` backend, with no cache:

- `v3`: the shipped code;
- `no grid gate`: the same without the semitone-grid test (GRID_MIN = -inf): what speech gets
  when only silence, noise and low level give "N" (as in v2);
- `full-band HPSS`: the same output path with the harmonic/percussive median filters run on the
  whole spectrum instead of 0-2.6 kHz (v2's cost).

Columns: chord time = mean over clips of 1 - no_chord_fraction; clips >= 90 % N; mean compute
seconds per clip. The speed ratio (full-band / v3, same clips, same run) is printed below the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_TABLE = REPO / "textrouter" / "data" / "mmau-mini-outcomes-dev.jsonl"


def pick_clips(table: Path, clips: Path, per_task: int) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"music": [], "speech": []}
    seen: set[str] = set()
    for line in table.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        task, audio = row.get("task"), row.get("audio")
        path = clips / str(audio)
        if task in out and audio not in seen and len(out[task]) < per_task and path.is_file():
            seen.add(audio)
            out[task].append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="?", help="folder of MMAU clips named by the table's `audio` field")
    ap.add_argument("--table", default=str(DEFAULT_TABLE), help="outcome table (JSONL)")
    ap.add_argument("--per-task", type=int, default=40, help="clips per task (music, speech)")
    args = ap.parse_args(argv)
    if not args.clips or not Path(args.clips).is_dir():
        print(f"skipped: clips folder {args.clips!r} not found; pass the folder holding the MMAU clips", file=sys.stderr)
        return 0
    if args.per_task < 1:
        print("error: --per-task must be >= 1; pass a positive number of clips", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from toolcache.audio import load_audio
    from toolcache.tools import chords as ch

    by_task = pick_clips(Path(args.table), Path(args.clips), args.per_task)
    variants = {"v3": {}, "no grid gate": {"GRID_MIN": float("-inf")}, "full-band HPSS": {"HPSS_MAX_HZ": 1e9}}
    stats: dict[tuple[str, str], dict] = {}
    err = Console(stderr=True)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("chords", total=sum(len(v) for v in by_task.values()) * len(variants))
        for tname, paths in by_task.items():
            for path in paths:
                clip = load_audio(path, ch.SAMPLE_RATE)
                for vname, overrides in variants.items():
                    saved = {k: getattr(ch, k) for k in overrides}
                    try:
                        for k, v in overrides.items():
                            setattr(ch, k, v)
                        t0 = time.perf_counter()
                        res = ch.compute(clip)
                        dt = time.perf_counter() - t0
                    finally:
                        for k, v in saved.items():
                            setattr(ch, k, v)
                    s = stats.setdefault((vname, tname), {"n": 0, "chord": 0.0, "mostly_n": 0, "secs": 0.0})
                    frac = 1.0 - res["summary"]["no_chord_fraction"]
                    s["n"] += 1
                    s["chord"] += frac
                    s["mostly_n"] += int(frac <= 0.1)
                    s["secs"] += dt
                    progress.update(task, advance=1, description=f"{tname} {vname}")
    out = Console(width=140) if not sys.stdout.isatty() else Console()
    table = Table(title="chords (templates) on real clips: chord-labelled time and compute time")
    for col in ("variant", "task", "clips", "chord time", "clips >= 90% N", "s / clip"):
        table.add_column(col, justify="left" if col in ("variant", "task") else "right")
    for (vname, tname), s in stats.items():
        n = max(1, s["n"])
        table.add_row(vname, tname, str(s["n"]), f"{s['chord'] / n:.3f}", str(s["mostly_n"]), f"{s['secs'] / n:.3f}")
    out.print(table)
    fast = sum(s["secs"] for (v, _), s in stats.items() if v == "v3")
    slow = sum(s["secs"] for (v, _), s in stats.items() if v == "full-band HPSS")
    if fast > 0:
        out.print(f"full-band HPSS / v3 compute time: {slow / fast:.2f}x (same clips, same run)")
    return 0


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun the bench (nothing is cached)")
