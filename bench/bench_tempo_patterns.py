#!/usr/bin/env python
"""`audio_features` tempo on synthetic drum loops and click tracks of known tempo, one table.

    python bench/bench_tempo_patterns.py                     # 3 styles x 12 tempos (50-200 BPM), 20 s each
    python bench/bench_tempo_patterns.py --tempos 60,90,120 --seconds 30 --json
    python bench/bench_tempo_patterns.py --salience acf-dft      # one salience only (default: all)

Material (tests/synth_music.py): `drum_pattern` loops (rock: kick 1/3, snare 2/4, eighth-note
hats; hiphop: half-time kick/snare, sixteenth hats; four-on-the-floor: kick every beat, off-beat
hats), each hit jittered by 8 ms, over a quiet bass line; and `click_track` (a click per beat,
every fourth louder). Every salience of toolcache.tools.tempo.SALIENCES (the shipped default
first) reads the same clips in this run. Per salience and material: how many tempos the tool
reads within 8 % (MIREX accuracy 1), within 8 % of x2, x1/2, x3 or x1/3 (accuracy 2), and at an
unrelated ratio (neither: e.g. 2/3 of the beat), plus the tempos it misses and what it read. No
real recordings: the ground truth is the generator's beat.
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
    from toolcache.tools import features, tempo

    names = tempo.available_saliences()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tempos", default=",".join(str(t) for t in TEMPOS))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--salience", choices=["all", *names], default="all",
                    help=f"tempo salience to read with (default all; shipped: {tempo.DEFAULT_SALIENCE})")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    saliences = names if args.salience == "all" else [args.salience]
    tempos = [float(t) for t in args.tempos.split(",")]
    materials = {style: (lambda b, s=style: sm.drum_pattern(b, args.seconds, s, SR)) for style in sm.DRUM_STYLES}
    materials["click track"] = lambda b: sm.click_track(b, args.seconds, SR)
    doc: dict = {name: {} for name in saliences}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        job = bar.add_task("audio_features tempo", total=len(materials) * len(tempos))
        for material, make in materials.items():
            for name in saliences:
                doc[name][material] = []
            for bpm in tempos:
                y = sm.clip(make(bpm), SR).samples
                for name in saliences:  # the same clip for every salience
                    read = features._tempo(y, SR, name)["tempo_bpm"]
                    doc[name][material].append({"bpm": bpm, "read": read, "class": classify(read, bpm)})
                bar.advance(job)
    if args.json:
        print(json.dumps({"default": tempo.DEFAULT_SALIENCE, "saliences": doc}, indent=2))
        return 0
    out = Table(title=f"audio_features tempo, synthetic material, {len(tempos)} tempos {min(tempos):g}-{max(tempos):g} BPM")
    for col in ("salience", "material", "within 8%", "octave (x2, x3)", "unrelated", "missed: true -> read"):
        out.add_column(col, justify="left" if col in ("salience", "material", "missed: true -> read") else "right")
    for name in saliences:
        loops = [r for m, rows in doc[name].items() if m != "click track" for r in rows]
        for material, rows in [*doc[name].items(), ("all drum loops", loops)]:
            count = lambda c: sum(r["class"] == c for r in rows)  # noqa: E731
            missed = ", ".join(f"{r['bpm']:g}->{r['read']}" for r in rows if r["class"] != "exact")
            label = name + (" (shipped)" if name == tempo.DEFAULT_SALIENCE else "")
            out.add_row(label, material, f"{count('exact')}/{len(rows)}", str(count("octave")),
                        str(count("unrelated") + count("none")),
                        "-" if not missed else ("(see rows above)" if material == "all drum loops" else missed))
        out.add_section()
    Console().print(out)
    return 0


if __name__ == "__main__":
    from benchmain import run

    run(main, "rerun the bench to measure")
