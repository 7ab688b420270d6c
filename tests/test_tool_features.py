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


def test_steady_tone_has_no_tempo():
    # no onsets at all: a tempo would be invented by the beat tracker's prior
    result = _json_roundtrip(compute(sm.clip(sm.tone(220.0, 8.0, SR), SR)))
    assert result["tempo_bpm"] is None and result["tempo_reliable"] is False
    assert result["beat_count"] == 0


def test_noise_tempo_is_flagged_unreliable():
    rng = np.random.default_rng(2)
    y = (0.1 * rng.standard_normal(8 * SR)).astype(np.float32)
    result = _json_roundtrip(compute(sm.clip(y, SR)))
    assert result["tempo_reliable"] is False
    assert result["beat_strength"] < 0.5


def test_long_clip_pitch_uses_windows_and_stays_right():
    # 70 s > PITCH_MAX_S: pitch comes from evenly spaced windows; first half 220 Hz, second 330 Hz
    y = np.concatenate([sm.tone(220.0, 30.0, SR), sm.tone(330.0, 40.0, SR)])
    result = compute(sm.clip(y, SR))
    assert min(abs(result["pitch_hz"] - 220.0) / 220.0, abs(result["pitch_hz"] - 330.0) / 330.0) < 0.02
    assert result["duration_s"] == 70.0


def test_short_clip_tempo_flagged_unreliable():
    result = _json_roundtrip(compute(sm.clip(sm.click_track(120, 2.0, SR), SR)))
    assert result["tempo_reliable"] is False


def test_unknown_param_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        compute(sm.clip(sm.tone(440.0, 1.0, SR), SR), window=3)


def test_through_toolcache_run_with_a_44k_wav(tmp_path):
    api = pytest.importorskip("toolcache.api")
    y = sm.tone(440.0, 6.0, 44100, rms_dbfs=-20.0) + sm.click_track(120, 6.0, 44100) * 0.3
    wav = sm.write_wav(tmp_path / "tone_clicks.wav", y, 44100)
    first = api.run("audio_features", wav)
    assert first["cached"] is False and first["backend"].startswith("librosa ")
    res = first["result"]
    assert abs(res["pitch_hz"] - 440.0) / 440.0 < 0.02
    assert abs(res["tempo_bpm"] - 120.0) / 120.0 < 0.04
    assert res["duration_s"] == 6.0
    second = api.run("audio_features", wav)
    assert second["cached"] is True and second["result"] == res


def test_very_short_loud_clip_is_not_called_silent():
    result = _json_roundtrip(compute(sm.clip(sm.tone(440.0, 0.05, SR, rms_dbfs=-10.0), SR)))
    assert result["silent"] is False and abs(result["loudness_dbfs"] + 10.0) < 0.5
    assert result["pitch_hz"] is None and result["tempo_bpm"] is None
    assert result["duration_s"] == 0.05
