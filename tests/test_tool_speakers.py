"""The `speakers` tool: Silero VAD v6 ONNX speech regions + MFCC-statistics speaker clustering.

Known answers (examples/audio, .rttm ground truth): the 30 s two-speaker call has 2 speakers, the
first word at 6.69 s; the 10 s bird recording has no speech.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from synth_speech import clip, silence
from toolcache.audio import load_audio
from toolcache.errors import ToolFailed
from toolcache.tools import TOOLS, speakers


def rttm(path):
    out = []
    for line in path.read_text().splitlines():
        f = line.split()
        out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return out


def test_registered_with_cheap_backend():
    spec = TOOLS["speakers"]
    assert spec.compute is speakers.speakers and "silero_vad_v6.onnx" in spec.backend({})
    assert "sha256:" in spec.backend({})


def test_two_speaker_call_gives_two_speakers_and_turns(speech_wav):
    out = speakers.speakers(load_audio(speech_wav))
    truth = rttm(speech_wav.with_suffix(".rttm"))
    assert out["n_speakers"] == len({s for _, _, s in truth}) == 2
    assert out["n_turns"] >= 3 and set(out["speaker_seconds"]) == {"S1", "S2"}
    first = min(a for a, _, _ in truth)
    assert abs(out["speech_regions"][0][0] - first) < 1.5                 # VAD finds the first words
    assert 18.0 <= out["speech_s"] <= 24.5                                  # .rttm: speech 6.69-30 s, pauses
    starts = [t["start"] for t in out["turns"]]
    assert starts == sorted(starts) and all(t["end"] > t["start"] for t in out["turns"])
    json.dumps(out)


def test_no_speech_gives_zero_speakers(birds_wav):
    assert speakers.speakers(load_audio(birds_wav))["n_speakers"] == 0
    out = speakers.speakers(clip(silence(3.0)))
    assert out["n_speakers"] == 0 and out["turns"] == [] and out["speech_regions"] == []


def test_speech_regions_hysteresis_and_gap_bridging():
    step = speakers.CHUNK / speakers.SAMPLE_RATE
    p = np.zeros(200)
    p[10:40] = 0.9          # 0.96 s of speech
    p[45:60] = 0.9          # 5 chunks (0.16 s) later: bridged into one region
    p[100:103] = 0.9        # 0.1 s blip: dropped (< 0.25 s)
    regions = speakers.speech_regions(p, 200 * step)
    assert regions == [(round(10 * step, 2), round(60 * step, 2))]


@pytest.mark.parametrize("params,needle", [({"distance": 0}, "distance"), ({"max_speakers": 0}, "max_speakers"),
                                           ({"min_speaker_s": -1}, "min_speaker_s"), ({"bogus": 1}, "valid:")])
def test_bad_params_name_the_fix(params, needle):
    with pytest.raises(ValueError, match=needle):
        speakers.speakers(clip(silence(1.0)), **params)


def test_wrong_rate_is_one_line():
    with pytest.raises(ToolFailed, match="16000 Hz"):
        speakers.speakers(clip(silence(1.0), sr=8000))
