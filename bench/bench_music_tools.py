"""Compare chord backends on synthetic progressions, and time `audio_features`, in one run.

    python bench/bench_music_tools.py            # every backend importable here
    python bench/bench_music_tools.py --quick    # 4 progressions per set only
    python bench/bench_music_tools.py --madmom   # also madmom (if installed; slow)

Chord backends measured: our "templates" (always), "chordino" (if `vamp` + `chord-extractor`
are installed) and madmom's deep-chroma and CNN+CRF recognisers (if `madmom` imports; measured
only: its models are CC BY-NC-SA). Accuracy is frame accuracy on a 0.1 s grid, strict and with
+-0.5 s boundary tolerance; "seq ok" counts progressions whose ordered sequence of distinct
labels (N dropped, repeats merged) equals the truth; labels are compared as triads (root +
maj/min family: the v2 vocabulary reads 7ths on the 7th renderings, whose truth is the triad). Time is the mean seconds per clip after a
warm-up clip (process start-up and numba/model loading excluded, reported separately).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import synth_music as sm  # noqa: E402
from toolcache.tools import chords as ch  # noqa: E402

SR = ch.SAMPLE_RATE
SPC = 2.0  # seconds per chord

# (labels, octave of the chord roots, SNR in dB or None): several keys, minor keys, noise.
PROGRESSIONS = [
    (["C:maj", "G:maj", "A:min", "F:maj"], 4, None),
    (["D:maj", "A:maj", "B:min", "G:maj"], 4, None),
    (["A:min", "F:maj", "C:maj", "G:maj"], 3, None),
    (["E:min", "C:maj", "G:maj", "D:maj"], 4, 20.0),
    (["F:maj", "A#:maj", "D:min", "C:maj"], 4, 10.0),
    (["D:min", "G:maj", "C:maj", "A:min"], 3, 10.0),
    (["F#:min", "D:maj", "A:maj", "E:maj"], 4, None),
    (["C#:min", "A:maj", "E:maj", "B:maj"], 3, 20.0),
    (["G:maj", "E:min", "C:maj", "D:maj", "G:maj", "B:min"], 4, None),
    (["A#:maj", "G:min", "D#:maj", "F:maj"], 4, 5.0),
]
# Harder renderings (progression kwargs): arpeggios, 7th chords (truth stays the triad),
# inversions, percussion at 100-120 BPM, and noise; keys not used above.
HARD = [
    (["C:maj", "A:min", "D:min", "G:maj"], dict(style="arpeggio")),
    (["E:maj", "C#:min", "A:maj", "B:maj"], dict(seventh=True)),
    (["G:maj", "D:maj", "E:min", "C:maj"], dict(inversion=1, drums_bpm=120)),
    (["B:min", "G:maj", "D:maj", "A:maj"], dict(style="arpeggio", drums_bpm=100, snr_db=15.0)),
    (["G#:min", "E:maj", "B:maj", "F#:maj"], dict(seventh=True, inversion=2, snr_db=10.0)),
    (["D#:min", "B:maj", "F#:maj", "C#:maj"], dict(octave=3, drums_bpm=110, snr_db=10.0)),
]


def reference_sequence(labels: list[str]) -> list[str]:
    out: list[str] = []
    for lab in labels:
        if not out or out[-1] != lab:
            out.append(lab)
    return out


def predicted_sequence(segs: list[dict]) -> list[str]:
    return reference_sequence([triad(s["label"]) for s in segs if s["label"] != ch.NO_CHORD])


def triad(label: str) -> str:
    """Root + maj/min family ('C:7' -> 'C:maj', 'A:min7' -> 'A:min'): the truth here is triads
    (7th renderings keep the triad label), so a 7th read on a 7th rendering counts right."""
    root, _, q = label.partition(":")
    if not q:
        return label
    return f"{root}:{'min' if q.startswith('min') or q.startswith('dim') else 'maj'}"


def label_at(segs: list[dict], t: float) -> str:
    for s in segs:
        if s["start"] <= t < s["end"]:
            return triad(s["label"])
    return ch.NO_CHORD


def frame_accuracy(segs: list[dict], labels: list[str], tolerance_s: float = 0.0, step: float = 0.1) -> float:
    """Fraction of grid times whose predicted label equals the truth within +-tolerance_s."""
    total = len(labels) * SPC
    times = np.arange(step / 2, total, step)
    ok = 0
    for t in times:
        pred = label_at(segs, t)
        window = [t] if tolerance_s == 0 else [t - tolerance_s, t, t + tolerance_s]
        truth = {labels[min(len(labels) - 1, max(0, int(w // SPC)))] for w in window}
        ok += pred in truth
    return ok / len(times)


def madmom_backends() -> dict:
    """madmom recognisers as segment functions, if madmom imports (measurement only)."""
    try:
        from madmom.audio.chroma import DeepChromaProcessor
        from madmom.audio.signal import Signal
        from madmom.features.chords import (CNNChordFeatureProcessor, CRFChordRecognitionProcessor,
                                            DeepChromaChordRecognitionProcessor)
    except Exception:  # not installed (licence: CC BY-NC-SA models), or broken
        return {}
    import librosa

    dcp, dcr = DeepChromaProcessor(), DeepChromaChordRecognitionProcessor()
    cnf, crf = CNNChordFeatureProcessor(), CRFChordRecognitionProcessor()

    def to_segs(rows) -> list[dict]:
        return [{"start": float(a), "end": float(b), "label": str(lab) if str(lab) != "N" else ch.NO_CHORD}
                for a, b, lab in rows]

    def sig(y, sr):  # madmom's models expect 44.1 kHz
        return Signal(librosa.resample(y, orig_sr=sr, target_sr=44100), sample_rate=44100, num_channels=1)

    return {
        "madmom-deepchroma": lambda y, sr: to_segs(dcr(dcp(sig(y, sr)))),
        "madmom-cnn-crf": lambda y, sr: to_segs(crf(cnf(sig(y, sr)))),
    }


def chord_backends(with_madmom: bool) -> dict:
    fns = {"templates": lambda y, sr: ch._tidy(ch._templates_backend(y, sr), y.size / sr)}
    try:
        ch._chordino_plugin_dir()
        fns["chordino"] = lambda y, sr: ch._tidy(ch._chordino_backend(y, sr), y.size / sr)
    except ch.ChordBackendError:
        print("chordino: not installed, skipped", file=sys.stderr)
    if with_madmom:
        fns.update(madmom_backends())
    return fns


def make_set(which: str, quick: bool) -> list[tuple[list[str], np.ndarray]]:
    if which == "basic":
        progs = [(labels, dict(octave=octv, snr_db=snr)) for labels, octv, snr in PROGRESSIONS]
    else:
        progs = HARD
    progs = progs[:4] if quick else progs
    return [(labels, sm.progression(labels, SPC, SR, seed=i, **kw)) for i, (labels, kw) in enumerate(progs)]


def bench_chords(which: str, quick: bool, with_madmom: bool) -> None:
    clips = make_set(which, quick)
    print(f"chords, {which} set: {len(clips)} progressions, {SPC:.0f} s per chord, {SR} Hz")
    print(f"{'backend':<20}{'strict acc':>11}{'+-0.5s acc':>11}{'seq ok':>8}{'s/clip':>8}{'first':>8}  worst")
    for name, fn in chord_backends(with_madmom).items():
        t0 = time.perf_counter()
        fn(sm.progression(["C:maj"], 2.0, SR), SR)  # warm-up: imports, numba, model loading
        first = time.perf_counter() - t0
        strict, tol, seq_ok, elapsed, worst = [], [], 0, 0.0, (2.0, "")
        for labels, y in clips:
            t0 = time.perf_counter()
            segs = fn(y, SR)
            elapsed += time.perf_counter() - t0
            strict.append(frame_accuracy(segs, labels))
            tol.append(frame_accuracy(segs, labels, 0.5))
            seq_ok += predicted_sequence(segs) == reference_sequence(labels)
            if tol[-1] < worst[0]:
                worst = (tol[-1], " ".join(s["label"] for s in segs))
        print(f"{name:<20}{np.mean(strict):>11.3f}{np.mean(tol):>11.3f}{seq_ok:>5}/{len(clips):<2}"
              f"{elapsed / len(clips):>8.2f}{first:>8.2f}  {worst[0]:.2f}: {worst[1][:60]}")


def bench_features() -> None:
    from toolcache.tools import features as ft

    y = sm.tone(440.0, 30.0, ft.SAMPLE_RATE, -20) + 0.3 * sm.click_track(120, 30.0, ft.SAMPLE_RATE)
    clip = sm.clip(y, ft.SAMPLE_RATE)
    t0 = time.perf_counter()
    ft.compute(clip)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        ft.compute(clip)
        runs.append(time.perf_counter() - t0)
    parts = {}
    for fn in (ft._tempo, ft._pitch, ft._spectral):
        t0 = time.perf_counter()
        fn(y, ft.SAMPLE_RATE)
        parts[fn.__name__.strip("_")] = time.perf_counter() - t0
    print(f"audio_features on a 30 s clip: first call {first:.2f} s (numpy/scipy, no JIT), "
          f"then median {np.median(runs):.2f} s  ("
          + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()) + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 progressions only")
    ap.add_argument("--skip-features", action="store_true")
    ap.add_argument("--set", choices=["basic", "hard", "both"], default="both")
    ap.add_argument("--madmom", action="store_true", help="also madmom (slow: CNN ~18 s per clip)")
    args = ap.parse_args()
    if not args.skip_features:
        bench_features()
    for which in (["basic", "hard"] if args.set == "both" else [args.set]):
        bench_chords(which, args.quick, args.madmom)


if __name__ == "__main__":
    main()
