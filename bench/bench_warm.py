"""Benchmark: `audiorouter cache warm` throughput with 1 worker vs N workers, one run.

    python bench/bench_warm.py                          # 40 x 10 s clips cut from examples/audio
    python bench/bench_warm.py --clips CLIPS_DIR # the first 40 clips of a folder instead
    python bench/bench_warm.py --tools asr,sound_events --workers 2 --rounds 2 --json

Each measurement runs the real CLI (`python -m cli.main cache warm FOLDER --tools ... --workers W
--json`) in a fresh process against a fresh, empty cache folder, and times the whole command
(process start, imports, worker start-up, model loads, compute, cache writes): what a user waits for.
"cpu s" is the CPU time of the command and its workers (user + system): on a shared machine it
shows the work done apart from the waiting for cores that other programs use.
Rounds alternate 1 worker / N workers so machine load drifts hit both alike; the table shows the
median wall time per setting, clips/s, and the ratio (N-worker throughput / 1-worker throughput).
Also shown: the worker count `warm` actually used (it may use fewer than asked for a small job).
Clips given with --clips are only read (symlinked into a temp folder), never copied into the repo.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "audio"
TARGET_RATIO = 1.3  # issue 16: warm with 2 workers >= 1.3x one worker on 40 clips


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """n distinct `seconds`-long 16 kHz clips cut from the repo's own recordings (speech, birds),
    each with its own faint noise so every clip has its own hash (no cache hits between clips)."""
    import numpy as np
    import soundfile as sf
    import soxr

    sources = []
    for name in ("speech-two-speakers.wav", "birds-10s.wav"):
        x, sr = sf.read(EXAMPLES / name, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != 16000:
            x = soxr.resample(x, sr, 16000)
        sources.append(x)
    sr = 16000
    want = int(seconds * sr)
    rng = np.random.default_rng(16)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        start = (i * 3 * sr) % max(1, src.size - want) if src.size > want else 0
        piece = src[start:start + want]
        if piece.size < want:
            piece = np.pad(piece, (0, want - piece.size))
        piece = piece + 0.002 * rng.standard_normal(piece.size).astype(np.float32)
        p = folder / f"clip{i:03d}.wav"
        sf.write(p, np.clip(piece, -1, 1), sr, subtype="PCM_16")
        out.append(p)
    return out


def link_clips(src: Path, folder: Path, n: int) -> list[Path]:
    names = sorted(p for p in src.iterdir() if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))[:n]
    out = []
    for p in names:
        dst = folder / p.name
        os.symlink(p.resolve(), dst)
        out.append(dst)
    return out


def run_warm(folder: Path, tools: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-warm-cache-") as cache:
        env = dict(os.environ, AUDIOROUTER_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "cli.main", "cache", "warm", str(folder), "--tools", tools,
                              "--workers", str(workers), "--json"], capture_output=True, text=True, env=env, cwd=REPO)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # the CLI and its workers (reaped)
    if res.returncode != 0:
        raise SystemExit(f"warm --workers {workers} failed (exit {res.returncode}): {res.stderr.strip()[-800:]}")
    summary = json.loads(res.stdout)
    return {"wall_s": wall, "cpu_s": cpu, "used_workers": summary["workers"], "computed": summary["computed"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=None, help="Folder of clips (default: synthesise from examples/audio).")
    ap.add_argument("--n", type=int, default=40, help="Number of clips (default 40).")
    ap.add_argument("--seconds", type=float, default=10.0, help="Seconds per synthesised clip (default 10).")
    ap.add_argument("--tools", default="asr,sound_events", help="Tools to warm (default asr,sound_events, as in the README).")
    ap.add_argument("--workers", type=int, default=2, help="Worker count compared with 1 (default 2).")
    ap.add_argument("--rounds", type=int, default=2, help="Alternating rounds per setting (default 2).")
    ap.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-warm-clips-") as tmp:
        folder = Path(tmp)
        if args.clips is not None:
            if not args.clips.is_dir():
                print(f"skipped: {args.clips} is not a folder", file=sys.stderr)
                return 0
            clips = link_clips(args.clips, folder, args.n)
            source = f"{args.clips} (first {len(clips)})"
        else:
            clips = make_clips(folder, args.n, args.seconds)
            source = f"{len(clips)} x {args.seconds:g} s cut from examples/audio"
        runs: dict[int, list[dict]] = {1: [], args.workers: []}
        for _ in range(args.rounds):
            for w in (1, args.workers):
                runs[w].append(run_warm(folder, args.tools, w))
                assert runs[w][-1]["computed"] > 0
    rows = []
    for w, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        rows.append({"workers_asked": w, "workers_used": rs[-1]["used_workers"], "wall_s": round(wall, 2),
                     "cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 2),
                     "walls_s": [round(r["wall_s"], 2) for r in rs], "clips_per_s": round(len(clips) / wall, 2)})
    ratio = rows[1]["clips_per_s"] / rows[0]["clips_per_s"]
    doc = {"source": source, "tools": args.tools, "clips": len(clips), "cpus": os.cpu_count(),
           "load_avg_1m": round(os.getloadavg()[0], 2), "rows": rows, "ratio": round(ratio, 2),
           "target_ratio": TARGET_RATIO}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"cache warm: {source}, tools {args.tools}, {os.cpu_count()} cores, "
                    f"load {doc['load_avg_1m']}", title_justify="left")
    for col in ("--workers", "used", "wall s (median)", "walls s", "cpu s", "clips/s", "vs 1 worker"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["workers_asked"]), str(r["workers_used"]), f"{r['wall_s']:.2f}",
                  " ".join(f"{x:.2f}" for x in r["walls_s"]), f"{r['cpu_s']:.1f}", f"{r['clips_per_s']:.2f}",
                  f"{r['clips_per_s'] / rows[0]['clips_per_s']:.2f}x")
    t.caption = f"target: {args.workers} workers >= {TARGET_RATIO}x one worker; measured {ratio:.2f}x"
    Console(highlight=False).print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
