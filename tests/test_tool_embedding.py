"""The `audio_embedding` tool (toolcache/tools/embedding.py) on the repo's own clips, real int8 YAMNet ONNX.

Measured on the dev machine (threshold 0.2, windows of ~1 s every 0.5 s):
- speech-two-speakers.wav (30 s): speech 0.79, music 0.00, silence 0.21 (the first ~6 s are silent)
- birds-10s.wav (10.1 s, quiet: -46 dBFS peak): speech 0.00, music 0.00, silence 0.00
And the bench's feature standardisation (bench/bench_audio_aware.py) uses training rows only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import toolcache
from synth_speech import clip, silence
from toolcache.audio import load_audio
from toolcache.tools import TOOLS, embedding, sound

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def speech(speech_wav):
    return load_audio(speech_wav)


@pytest.fixture(scope="module")
def birds(birds_wav):
    return load_audio(birds_wav)


def test_registered_with_version_limits_and_backend():
    spec = TOOLS["audio_embedding"]
    assert "audio_embedding" in toolcache.available_tools()
    assert spec.version and spec.limits and spec.sample_rate == 16000
    assert "yamnet" in spec.backend({}) and "1024-d" in spec.backend({})


def test_extra_output_bytes_is_a_valid_onnx_merge():
    onnx = pytest.importorskip("onnx")
    base = sound._extracted_onnx().read_bytes()
    m = onnx.load_from_string(base + embedding.extra_output_bytes(embedding.EMBED_TENSOR, (1, 1024)))
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    assert outs == {"class_scores": [1, 521], embedding.EMBED_TENSOR: [1, 1024]}
    assert m.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # the added tensor is the classifier's input (Gemm), i.e. the 1024-d embedding
    gemm = [n for n in m.graph.node if n.op_type == "Gemm"]
    assert len(gemm) == 1 and gemm[0].input[0] == embedding.EMBED_TENSOR


def test_speech_clip_has_speech_birds_do_not(speech, birds):
    s = embedding.audio_embedding(speech)
    b = embedding.audio_embedding(birds)
    assert s["speech_fraction"] > 0.6 and b["speech_fraction"] < 0.1
    assert 0.1 < s["silence_fraction"] < 0.4          # ~6 s of 30 s are silent before the first word
    assert b["silence_fraction"] < 0.1                 # quiet birdsong is not silence
    assert s["duration_s"] == pytest.approx(30.0, abs=0.05) and b["duration_s"] == pytest.approx(10.13, abs=0.05)
    for r in (s, b):
        mean, mx = np.array(r["embedding_mean"]), np.array(r["embedding_max"])
        assert mean.shape == mx.shape == (1024,) and r["dim"] == 1024
        assert np.isfinite(mean).all() and (mean >= 0).all()          # ReLU output, then averaged
        assert (mx >= mean - 1e-3).all() and mx.max() > mean.max()
        json.dumps(r, allow_nan=False)
    ms, mb = np.array(s["embedding_mean"]), np.array(b["embedding_mean"])
    cos = ms @ mb / (np.linalg.norm(ms) * np.linalg.norm(mb))
    assert cos < 0.9                                   # different sounds, different embeddings


def test_digital_silence_is_all_silence():
    r = embedding.audio_embedding(clip(silence(3.0)))
    assert r["silence_fraction"] == 1.0 and r["speech_fraction"] == 0.0 and r["music_fraction"] == 0.0


def test_scores_equal_the_sound_tools_and_the_pass_is_shared(speech, monkeypatch):
    sound.clear_memo()
    scores, emb = embedding.window_outputs(speech)
    assert emb.shape == (scores.shape[0], 1024)
    ref = sound._infer(sound.window_patches(speech.samples))    # the sound tools' own model
    assert np.array_equal(scores, ref)
    # the pass was handed to sound.py's memo: sound_events now runs with no second inference
    monkeypatch.setattr(sound, "_infer", lambda patches: (_ for _ in ()).throw(AssertionError("second inference")))
    assert sound.sound_events(speech)["events"][0]["label"] == "Speech"


def test_params_are_checked(speech):
    with pytest.raises(ValueError, match="valid: threshold"):
        embedding.audio_embedding(speech, treshold=0.5)
    with pytest.raises(ValueError, match="outside"):
        embedding.audio_embedding(speech, threshold=1.5)
    strict = embedding.audio_embedding(speech, threshold=0.99)
    assert strict["speech_fraction"] < embedding.audio_embedding(speech)["speech_fraction"]


def test_through_the_tool_cache(speech_wav):
    first = toolcache.run("audio_embedding", speech_wav)
    again = toolcache.run("audio_embedding", speech_wav)
    assert not first["cached"] and again["cached"]
    assert again["result"] == first["result"] and first["tool_version"] == TOOLS["audio_embedding"].version
    assert first["limits"] and "1024-d" in first["backend"]
    v = embedding.feature_vector(again["result"])
    assert v.shape == (2 * 1024 + len(embedding.SCALAR_FEATURES),) and v.dtype == np.float32
    assert v[-3] == pytest.approx(first["result"]["speech_fraction"])
    with pytest.raises(ValueError, match="choose from"):
        embedding.feature_vector(again["result"], ["median"])


def test_stale_embed_model_is_rewritten():
    path = embedding.embed_model_path()
    good = path.read_bytes()
    path.write_bytes(good[:100])                       # a cut copy
    assert embedding.embed_model_path().read_bytes() == good


def test_bench_standardises_on_training_rows_and_skips_without_clips(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    import bench_audio_aware as bench

    rng = np.random.default_rng(0)
    raw = {"mean": rng.normal(5.0, 2.0, (60, 1024)).astype(np.float32), "scalars": rng.uniform(0, 1, (60, 4))}
    tr = np.arange(40)
    for block, dim in (("scalars", 4), ("pca16", 20), ("mean", 1028)):
        f = bench.block_features(raw, block, tr, scale=0.5)
        assert f.shape == (60, dim)
        assert np.allclose(f[tr].mean(0), 0, atol=1e-4)              # centred on the training rows
        assert np.allclose(f[tr].std(0), 0.5, atol=1e-3)
    moved = {k: v.copy() for k, v in raw.items()}
    moved["mean"][40:] += 100.0                                     # test rows must not change the fit
    assert np.allclose(bench.block_features(moved, "pca16", tr, 0.5)[tr], bench.block_features(raw, "pca16", tr, 0.5)[tr])
    assert bench.main([str(tmp_path / "absent")]) == 0
    assert "skipped" in capsys.readouterr().err
