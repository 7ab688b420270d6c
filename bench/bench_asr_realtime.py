"""ASR compute time against clip length on real clips: is any call slower than 1.5x real time?

    python bench/bench_asr_realtime.py CLIPS_DIR                 # the speech groups' clips
    python bench/bench_asr_realtime.py CLIPS_DIR --limit 20 --json

Runs `asr` uncached (cache=False: every call computes; the fresh output is stored as usual) on
the clips of the real-audio benchmark's speech groups (bench/bench_tools_real.py: speech_word,
speech_content, speaker_count; bundled-table ids, clips read from CLIPS_DIR, never copied).
Prints one table: clips, median / p90 / max of compute seconds per second of audio ("x real
time", wall clock of toolcache.run), and how many calls took over 1.5x real time (the issue's
bound). Without CLIPS_DIR it prints one `skipped:` line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

BOUND = 1.5  # x real time (compute seconds per second of audio)
SPEECH_GROUPS = ("speech_word", "speech_content", "speaker_count")


def main(argv: list[str] | None = None) -> int:
    import bench_tools_real as btr

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="?", help="folder of MMAU clips named by the table's `audio` field")
    ap.add_argument("--table", default=str(btr.DEFAULT_TABLE), help="outcome table (JSONL)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many clips")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.clips or not Path(args.clips).is_dir():
        print(f"skipped: clips folder {args.clips!r} not found; pass the folder holding the MMAU clips", file=sys.stderr)
        return 0
    rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
    by_group = btr.assign(rows, btr.build_groups())
    clips = sorted({r["audio"] for g in SPEECH_GROUPS for r in by_group.get(g, [])
                    if (Path(args.clips) / r["audio"]).is_file()})[:args.limit]
    import toolcache
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    ratios: list[tuple[float, str]] = []
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("asr, uncached", total=len(clips))
        for name in clips:
            t0 = time.perf_counter()
            out = toolcache.run("asr", str(Path(args.clips) / name), cache=False)
            wall = time.perf_counter() - t0
            ratios.append((wall / max(1e-6, float(out["audio"]["duration_s"])), name))
            bar.advance(task)
    xs = sorted(r for r, _ in ratios)
    doc = {"clips": len(xs), "median_x": statistics.median(xs) if xs else None,
           "p90_x": xs[int(0.9 * (len(xs) - 1))] if xs else None, "max_x": xs[-1] if xs else None,
           "over_bound": sum(x > BOUND for x in xs), "bound_x": BOUND}
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    t = Table(title="asr compute time / clip duration on real clips (uncached, 2 cores)")
    for col in ("clips", "median x", "p90 x", "max x", f"over {BOUND}x"):
        t.add_column(col, justify="right")
    if xs:
        t.add_row(str(doc["clips"]), f"{doc['median_x']:.2f}", f"{doc['p90_x']:.2f}", f"{doc['max_x']:.2f}",
                  str(doc["over_bound"]))
    Console().print(t)
    return 0


if __name__ == "__main__":
    from benchmain import run

    run(main)
