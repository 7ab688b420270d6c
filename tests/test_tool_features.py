"""Known-answer tests of the `audio_features` tool on synthesised clips (real librosa, no mocks)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import synth_music as sm
from toolcache.registry import get_tool
from toolcache.tools.features import DB_FLOOR, SAMPLE_RATE, compute

SR = SAMPLE_RATE


def _json_roundtrip(result: dict) -> dict:
    # allow_nan=False: a NaN or inf anywhere in the result fails here
    return json.loads(json.dumps(result, allow_nan=False))


def test_spec_is_registered_with_music_rate():
    spec = get_tool("audio_features")
    assert spec.sample_rate == SR
    assert spec.backend({}).startswith("librosa ")
    assert "tempo" in spec.limits and "pitch" in spec.limits


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_click_track_tempo_within_4_percent(bpm):
    result = _json_roundtrip(compute(sm.clip(sm.click_track(bpm, 20.0, SR), SR)))
    assert result["tempo_bpm"] is not None
    assert abs(result["tempo_bpm"] - bpm) / bpm < 0.04, result
    # 20 s of beats at `bpm`: the tracker should find most of them
    expected_beats = 20.0 * bpm / 60.0
    assert result["beat_count"] >= 0.7 * expected_beats
    assert result["tempo_reliable"] is True


@pytest.mark.parametrize("freq", [220.0, 440.0, 880.0])
def test_tone_pitch_within_2_percent(freq):
    result = _json_roundtrip(compute(sm.clip(sm.tone(freq, 3.0, SR), SR)))
    assert result["pitch_hz"] is not None
    assert abs(result["pitch_hz"] - freq) / freq < 0.02, result
    assert result["voiced_fraction"] > 0.8
    # a pure sine's spectral centroid sits at its frequency
    assert abs(result["spectral_centroid_hz"] - freq) / freq < 0.05


def test_loudness_of_minus_20_dbfs_sine_and_exact_duration():
    y = sm.tone(440.0, 2.5, SR, rms_dbfs=-20.0)
    result = compute(sm.clip(y, SR))
    assert abs(result["loudness_dbfs"] - (-20.0)) < 0.5
    # peak of a sine is RMS + 3.01 dB
    assert abs(result["peak_dbfs"] - (-20.0 + 20 * math.log10(math.sqrt(2)))) < 0.5
    assert result["duration_s"] == 2.5


def test_quieter_sine_reads_quieter():
    loud = compute(sm.clip(sm.tone(440.0, 2.0, SR, rms_dbfs=-10.0), SR))["loudness_dbfs"]
    quiet = compute(sm.clip(sm.tone(440.0, 2.0, SR, rms_dbfs=-30.0), SR))["loudness_dbfs"]
    assert abs((loud - quiet) - 20.0) < 0.5


def test_silence_is_json_safe_with_no_pitch_or_tempo():
    result = _json_roundtrip(compute(sm.clip(sm.silence(3.0, SR), SR)))
    assert result["silent"] is True
    assert result["loudness_dbfs"] == DB_FLOOR and result["peak_dbfs"] == DB_FLOOR
    assert result["pitch_hz"] is None and result["tempo_bpm"] is None
    assert result["tempo_reliable"] is False
    assert result["duration_s"] == 3.0


def test_white_noise_has_no_pitch_and_high_flatness():
    rng = np.random.default_rng(1)
    y = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    result = _json_roundtrip(compute(sm.clip(y, SR)))
    assert result["pitch_hz"] is None or result["voiced_fraction"] < 0.2
    assert result["spectral_flatness"] > 0.3


def test_short_clip_tempo_flagged_unreliable():
    result = _json_roundtrip(compute(sm.clip(sm.click_track(120, 2.0, SR), SR)))
    assert result["tempo_reliable"] is False


def test_unknown_param_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        compute(sm.clip(sm.tone(440.0, 1.0, SR), SR), window=3)
