#!/usr/bin/env python
"""`audio_features` tempo on synthetic drum loops and click tracks of known tempo, one table.

    python bench/bench_tempo_patterns.py                     # 3 styles x 12 tempos (50-200 BPM), 20 s each
    python bench/bench_tempo_patterns.py --tempos 60,90,120 --seconds 30 --json
    python bench/bench_tempo_patterns.py --half-penalty 0       # probe a salience setting

Material (tests/synth_music.py): `drum_pattern` loops (rock: kick 1/3, snare 2/4, eighth-note
hats; hiphop: half-time kick/snare, sixteenth hats; four-on-the-floor: kick every beat, off-beat
hats), each hit jittered by 8 ms, over a quiet bass line; and `click_track` (a click per beat,
every fourth louder). Per material: how many tempos the tool reads within 8 % (MIREX accuracy 1),
within 8 % of x2, x1/2, x3 or x1/3 (accuracy 2), and at an unrelated ratio (neither: e.g. 2/3 of
the beat), plus the tempos it misses and what it read. No real recordings: the ground truth is
the generator's beat.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

TEMPOS = (50, 57, 68, 79, 90, 100, 120, 137, 150, 158, 175, 200)
SR = 22050  # the tool's analysis rate


def classify(read: float | None, bpm: float) -> str:
    if read is None:
        return "none"
    if abs(read / bpm - 1.0) <= 0.08:
        return "exact"
    if any(abs(read * f / bpm - 1.0) <= 0.08 for f in (0.5, 2.0, 1 / 3, 3.0)):
        return "octave"
    return "unrelated"


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    import synth_music as sm
    from toolcache.tools import features

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tempos", default=",".join(str(t) for t in TEMPOS))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--half-penalty", type=float, default=None,
                    help="probe: override toolcache.tools.tempo.HALF_PENALTY (weight of the autocorrelation at "
                         "half the beat period, subtracted) for this run; the shipped tool is unchanged")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.half_penalty is not None:
        from toolcache.tools import tempo

        tempo.HALF_PENALTY = args.half_penalty
    tempos = [float(t) for t in args.tempos.split(",")]
    materials = {style: (lambda b, s=style: sm.drum_pattern(b, args.seconds, s, SR)) for style in sm.DRUM_STYLES}
    materials["click track"] = lambda b: sm.click_track(b, args.seconds, SR)
    doc: dict = {}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        job = bar.add_task("audio_features", total=len(materials) * len(tempos))
        for name, make in materials.items():
            rows = []
            for bpm in tempos:
                read = features.compute(sm.clip(make(bpm), SR))["tempo_bpm"]
                rows.append({"bpm": bpm, "read": read, "class": classify(read, bpm)})
                bar.advance(job)
            doc[name] = rows
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    out = Table(title=f"audio_features tempo, synthetic material, {len(tempos)} tempos {min(tempos):g}-{max(tempos):g} BPM")
    for col in ("material", "within 8%", "octave (x2, x3)", "unrelated", "missed: true -> read"):
        out.add_column(col, justify="left" if col in ("material", "missed: true -> read") else "right")
    for name, rows in doc.items():
        count = lambda c: sum(r["class"] == c for r in rows)  # noqa: E731
        missed = ", ".join(f"{r['bpm']:g}->{r['read']}" for r in rows if r["class"] != "exact")
        out.add_row(name, f"{count('exact')}/{len(rows)}", str(count("octave")), str(count("unrelated") + count("none")),
                    missed or "-")
    Console().print(out)
    return 0


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun the bench to measure")
