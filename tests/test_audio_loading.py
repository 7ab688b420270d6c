"""toolcache.audio: hashing, decoding (formats by content), mono/resample, bounded memory, errors."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from toolcache.audio import file_sha256, load_audio
from toolcache.errors import AudioError


def _tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_file_sha256_matches_hashlib(speech_wav):
    assert file_sha256(speech_wav) == hashlib.sha256(speech_wav.read_bytes()).hexdigest()


def test_real_wav_resampled_to_16k_mono(birds_wav):
    clip = load_audio(birds_wav)  # 32 kHz original
    assert clip.sample_rate == 16000 and clip.original_sample_rate == 32000
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert abs(clip.duration_s - clip.original_duration_s) < 0.01
    assert 10.0 < clip.duration_s < 10.3
    assert not clip.truncated
    assert clip.sha256 == file_sha256(birds_wav)
    assert np.abs(clip.samples).max() <= 1.0 and np.abs(clip.samples).max() > 0.01


def test_stereo_downmix_and_resample_keep_the_tone(tmp_path):
    sr = 44100
    left = _tone(2.0, sr, 1000.0, 0.4)
    stereo = np.stack([left, left], axis=1)  # identical channels: the mean is the same tone
    p = tmp_path / "stereo.wav"
    sf.write(p, stereo, sr)
    clip = load_audio(p, sample_rate=16000)
    assert clip.channels == 2 and clip.original_sample_rate == sr
    assert abs(clip.samples.size - 32000) <= 2
    spectrum = np.abs(np.fft.rfft(clip.samples))
    peak_hz = np.argmax(spectrum) * 16000 / clip.samples.size
    assert abs(peak_hz - 1000.0) < 2.0
    rms = float(np.sqrt(np.mean(clip.samples[1000:-1000] ** 2)))
    assert abs(rms - 0.4 / np.sqrt(2)) < 0.01


@pytest.mark.parametrize("fmt,suffix", [("FLAC", ".flac"), ("OGG", ".ogg"), ("MP3", ".mp3")])
def test_formats_decode_even_when_renamed_to_wav(tmp_path, fmt, suffix):
    x = _tone(3.0, 16000, 440.0, 0.3)
    p = tmp_path / f"clip{suffix}"
    sf.write(p, x, 16000, format=fmt)
    renamed = tmp_path / "actually_not_a_wav.wav"
    shutil.copy(p, renamed)
    for path in (p, renamed):
        clip = load_audio(path)
        assert abs(clip.duration_s - 3.0) < 0.1, (fmt, path)
        assert float(np.sqrt(np.mean(clip.samples**2))) > 0.1


def test_silence_is_valid_audio(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(16000, np.float32), 16000)
    clip = load_audio(p)
    assert clip.duration_s == pytest.approx(1.0) and not np.any(clip.samples)


def test_max_seconds_truncates_and_env_default(tmp_path, monkeypatch, speech_wav):
    clip = load_audio(speech_wav, max_seconds=5)
    assert clip.truncated and clip.duration_s == pytest.approx(5.0)
    assert clip.original_duration_s == pytest.approx(30.0)
    monkeypatch.setenv("AUDIOROUTER_MAX_SECONDS", "2.5")
    clip = load_audio(speech_wav)
    assert clip.truncated and clip.duration_s == pytest.approx(2.5)
    monkeypatch.setenv("AUDIOROUTER_MAX_SECONDS", "abc")
    with pytest.raises(ValueError, match="AUDIOROUTER_MAX_SECONDS"):
        load_audio(speech_wav)


@pytest.fixture(scope="module")
def hour_wav(tmp_path_factory) -> Path:
    """A 1-hour 8 kHz 16-bit file (57.6 MB) written in 60 s blocks."""
    p = tmp_path_factory.mktemp("long") / "one_hour.wav"
    sr = 8000
    block = _tone(60.0, sr, 300.0, 0.2)
    with sf.SoundFile(p, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(block)
    return p


def test_one_hour_file_loads_fast_with_bounded_memory(hour_wav):
    # Measured in a fresh process so the peak RSS belongs to this load alone.
    code = (
        "import resource, sys, time\n"
        "from toolcache.audio import load_audio\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        f"c = load_audio({str(hour_wav)!r}, max_seconds=600)\n"
        "dt = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(dt, (peak - base) / 1024, c.duration_s, c.original_duration_s, c.truncated)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    dt, grown_mb, dur, orig, truncated = out.split()
    assert truncated == "True"
    assert float(dur) == pytest.approx(600.0, abs=0.01)
    assert float(orig) == pytest.approx(3600.0, abs=0.01)
    # 600 s at 16 kHz float32 is 38.4 MB of output; decoding the whole hour would need > 230 MB.
    assert float(grown_mb) < 120, f"load grew RSS by {grown_mb} MB"
    assert float(dt) < 10.0


def test_hashing_one_hour_file_is_streamed(hour_wav):
    t = time.perf_counter()
    digest = file_sha256(hour_wav)
    assert len(digest) == 64
    assert time.perf_counter() - t < 5.0


def _write_text(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated_header", "zero_length"])
def test_bad_inputs_raise_one_line_audio_error(tmp_path, case, speech_wav):
    if case == "missing":
        p = tmp_path / "nope.wav"
    elif case == "directory":
        p = tmp_path
    elif case == "empty":
        p = tmp_path / "empty.wav"
        p.write_bytes(b"")
    elif case == "text":
        p = _write_text(tmp_path / "notes.wav", "this is not audio\n" * 20)
    elif case == "truncated_header":
        p = tmp_path / "cut.wav"
        p.write_bytes(speech_wav.read_bytes()[:30])  # RIFF header cut inside the fmt chunk
    else:
        p = tmp_path / "zero.wav"
        sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError) as info:
        load_audio(p)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(p.name) in msg or str(p) in msg
    expected = {"missing": "not found", "directory": "directory", "empty": "empty",
                "text": "cannot decode", "truncated_header": "cannot decode", "zero_length": "no audio samples"}
    assert expected[case] in msg


# ---------------------------------------------------------------- non-finite samples (issue 12 item 5)
def _float_wav(p: Path, x: np.ndarray, sr: int = 16000) -> Path:
    sf.write(p, x, sr, subtype="FLOAT")  # only float WAVs can hold NaN/inf
    return p


@pytest.mark.parametrize("case", ["some_nan", "all_nan", "inf", "stereo_nan_one_channel"])
def test_non_finite_samples_are_refused_with_one_line(tmp_path, case):
    x = _tone(3.0, 16000)
    if case == "some_nan":
        x[16000:17000] = np.nan  # 1000 NaN samples from 1.0 s
    elif case == "all_nan":
        x[:] = np.nan
    elif case == "inf":
        x[8000] = np.inf
        x[8001] = -np.inf
    else:
        x = np.stack([x, x.copy()], axis=1)
        x[4000:4010, 1] = np.nan
    p = _float_wav(tmp_path / f"{case}.wav", x)
    with pytest.raises(AudioError) as info:
        load_audio(p)
    msg = str(info.value)
    assert "\n" not in msg and p.name in msg and "non-finite" in msg and "; " in msg
    expected = {"some_nan": ("1000 ", "1.000 s"), "all_nan": ("48000 ", "0.000 s"),
                "inf": ("2 ", "0.500 s"), "stereo_nan_one_channel": ("10 ", "0.250 s")}[case]
    for needle in expected:
        assert needle in msg, (needle, msg)


def test_non_finite_audio_is_never_cached(tmp_path):
    import toolcache
    from toolcache import Cache

    x = _tone(3.0, 16000)
    x[16000:17000] = np.nan
    p = _float_wav(tmp_path / "nan_tone.wav", x)
    for tool in ("audio_features", "sound_events"):
        with pytest.raises(AudioError, match="non-finite"):
            toolcache.run(tool, p)
    assert Cache().stats()["entries"] == 0
    # The same tone without the NaNs is fine (the check does not refuse finite float audio).
    clean = _float_wav(tmp_path / "clean.wav", _tone(3.0, 16000))
    assert toolcache.run("audio_features", clean)["cached"] is False


# ---------------------------------------------------------------- data shorter than the header (item 9)
def test_wav_shorter_than_its_header_is_flagged(tmp_path):
    import toolcache

    full = tmp_path / "full.wav"
    sf.write(full, _tone(10.0, 16000), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 1000])  # header says 10 s, 500 frames of data follow
    clip = load_audio(cut)
    assert clip.duration_s == pytest.approx(500 / 16000)
    assert clip.header_duration_s == pytest.approx(10.0)
    assert not clip.truncated
    assert load_audio(full).header_duration_s is None  # a complete file is not flagged
    env = toolcache.run("sound_events", cut)
    assert env["audio"]["header_mismatch"] is True
    assert env["audio"]["header_duration_s"] == pytest.approx(10.0)
    assert env["audio"]["original_duration_s"] == pytest.approx(500 / 16000)
    assert toolcache.run("sound_events", full)["audio"]["header_mismatch"] is False
    # A hit carries the flag too (it is part of the stored envelope).
    assert toolcache.run("sound_events", cut)["audio"]["header_mismatch"] is True


def test_wav_cut_but_longer_than_max_seconds_is_truncated_and_flagged(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, _tone(10.0, 8000), 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 8000 * 6])  # 6 s of the 10 s the header says
    clip = load_audio(cut, max_seconds=2)
    assert clip.truncated and clip.duration_s == pytest.approx(2.0)
    assert clip.original_duration_s == pytest.approx(6.0)
    assert clip.header_duration_s == pytest.approx(10.0)


def test_flac_cut_short_is_flagged(tmp_path):
    full = tmp_path / "full.flac"
    sf.write(full, _tone(10.0, 16000) + 0.01 * np.random.default_rng(0).standard_normal(160000).astype(np.float32),
             16000, format="FLAC")
    cut = tmp_path / "cut.flac"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    clip = load_audio(cut)
    assert clip.duration_s < 6.0
    assert clip.header_duration_s == pytest.approx(10.0)


# ---------------------------------------------------------------- max_seconds cap (issue 16 item 8)
def test_max_seconds_above_the_cap_is_refused_naming_it(monkeypatch, speech_wav):
    from toolcache.audio import MAX_SECONDS_CAP, validate_max_seconds

    assert validate_max_seconds(MAX_SECONDS_CAP) == MAX_SECONDS_CAP
    with pytest.raises(ValueError) as info:
        validate_max_seconds(MAX_SECONDS_CAP + 1, "--max-seconds")
    msg = str(info.value)
    assert "\n" not in msg and "cap" in msg and f"{MAX_SECONDS_CAP:g}" in msg and "memory" in msg
    with pytest.raises(ValueError, match="cap"):
        load_audio(speech_wav, max_seconds=1e9)
    monkeypatch.setenv("AUDIOROUTER_MAX_SECONDS", "100000")
    with pytest.raises(ValueError, match="AUDIOROUTER_MAX_SECONDS.*cap"):
        load_audio(speech_wav)
