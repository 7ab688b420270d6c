"""Runtimes of the speech and sound tools on the repo's real clips, measured in one run.

    python bench/bench_speech_sound.py            # prints a table; ratios are within this run

Rows: Whisper tiny.en / base (faster-whisper int8, beam 5 and 1, VAD on) on the 30 s two-speaker
call, with WER against its .stm; YAMNet scoring of the same clip (first call, repeat call served
by the per-process memo, and the three sound tools together vs one tool).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(os.environ.get("AUDIOROUTER_REPO") or Path(__file__).resolve().parent.parent)  # repo root
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from toolcache.audio import load_audio  # noqa: E402
from toolcache.tools import asr, sound  # noqa: E402


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def main() -> None:
    wav = REPO / "examples" / "audio" / "speech-two-speakers.wav"
    stm = wav.with_suffix(".stm")
    ref = " ".join(line.split(None, 5)[5] for line in stm.read_text().splitlines() if line.strip())
    clip = load_audio(wav)
    rows = []
    base_s = None
    for model in asr.available_asr_models():
        asr._faster_whisper_model(model)                      # load outside the timing
        for beam in (5, 1):
            out, s = timed(asr.transcribe, clip, model=model, beam_size=beam)
            base_s = base_s or s
            rows.append((f"asr {model} beam {beam}", s, clip.duration_s / s,
                         f"WER {asr.word_error_rate(ref, out['text']):.3f}", s / base_s))
    sound._SCORES.clear()
    _, first = timed(sound.window_scores, clip)               # includes ONNX session + librosa warm-up
    sound._SCORES.clear()
    _, one = timed(sound.sound_events, clip)
    _, memo = timed(sound.sound_events, clip)
    sound._SCORES.clear()
    t = time.perf_counter()
    for tool in (sound.sound_events, sound.sound_duration, sound.sound_temporal):
        tool(clip)
    three = time.perf_counter() - t
    t = time.perf_counter()
    for tool in (sound.sound_events, sound.sound_duration, sound.sound_temporal):
        sound._SCORES.clear()                                 # what it would cost without the memo
        tool(clip)
    three_nomemo = time.perf_counter() - t
    rows += [("yamnet first call (+ session load)", first, clip.duration_s / first, "", first / base_s),
             ("sound_events (1 inference)", one, clip.duration_s / one, "", one / base_s),
             ("sound_events again (memo hit)", memo, clip.duration_s / max(memo, 1e-9), "", memo / base_s),
             ("3 sound tools (1 shared inference)", three, clip.duration_s / three,
              f"{three / one:.2f}x one tool", three / base_s),
             ("3 sound tools, memo cleared each time", three_nomemo, clip.duration_s / three_nomemo,
              f"{three_nomemo / three:.2f}x the shared run", three_nomemo / base_s)]
    table = Table(title=f"speech/sound tools on {wav.name} ({clip.duration_s:.0f} s)")
    for col in ("run", "seconds", "x real time", "quality", "ratio vs first row"):
        table.add_column(col)
    for name, s, rt, q, ratio in rows:
        table.add_row(name, f"{s:.3f}", f"{rt:.1f}", q, f"{ratio:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
