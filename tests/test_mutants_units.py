"""Tests that kill planted bugs the rest of the suite let survive (issue 15, scripts/mutation_check.py).

Each test names the mutant it kills. They test public behaviour only: a loss value and its gradient,
a metric on a hand-made outcome matrix, a parse of a reply, a real loopback HTTP server that answers
429, a real stereo file, and the real SQLite cache.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf


# ---------------------------------------------------------------------------------------------
# textrouter.grpo: KL penalty sign (mutant: `objective + beta * kl`, i.e. the penalty rewards drift)
# ---------------------------------------------------------------------------------------------

def test_kl_penalty_pulls_the_policy_back_to_the_reference():
    import torch

    from textrouter.grpo import TrainOptions, grpo_loss

    opts = TrainOptions(mode="head", beta=0.5)
    rewards = torch.zeros(1, 2)  # same (zero) reward for both actions: zero advantage, only the KL acts
    ref = torch.zeros(1, 2)               # uniform reference policy
    z = torch.tensor([[0.0, 2.0]], requires_grad=True)  # drifted towards action 1
    loss, stats = grpo_loss(z, z.detach(), ref, rewards, opts)
    assert stats["kl"] > 0.1
    # with zero advantage the loss is exactly +beta * KL (a penalty, minimised by going back)
    assert float(loss.detach()) == pytest.approx(opts.beta * stats["kl"], rel=1e-5)
    loss.backward()
    assert z.grad[0, 1] > 0 and z.grad[0, 0] < 0  # gradient descent lowers the drifted logit
    # a few plain gradient steps reduce the KL
    w = z.detach().clone().requires_grad_(True)
    for _ in range(20):
        lo, _ = grpo_loss(w, w.detach(), ref, rewards, opts)
        (g,) = torch.autograd.grad(lo, w)
        w = (w - 1.0 * g).detach().requires_grad_(True)
    _, after = grpo_loss(w, w.detach(), ref, rewards, opts)
    assert after["kl"] < 0.5 * stats["kl"]


def test_larger_beta_keeps_the_trained_head_closer_to_the_initial_policy():
    from textrouter.grpo import TrainOptions, head_probs, train_head

    rng = np.random.RandomState(0)
    x = rng.randn(200, 16).astype(np.float32)
    helps = x[:, 0] > 0
    o = np.stack([(~helps).astype(int), helps.astype(int)], 1)

    def kl_to_uniform(beta: float) -> float:
        res = train_head(x, o, TrainOptions(mode="head", epochs=20, batch_size=50, seed=0, beta=beta))
        p = head_probs(x, res.head)
        return float(np.mean(np.sum(p * np.log(p * p.shape[1]), axis=1)))  # KL(p || uniform)

    free, tied = kl_to_uniform(0.0), kl_to_uniform(2.0)
    assert tied < 0.8 * free, (free, tied)


# ---------------------------------------------------------------------------------------------
# textrouter.evaluate: call_precision (mutant: counts calls where direct was already right)
# ---------------------------------------------------------------------------------------------

def test_call_precision_does_not_count_calls_where_direct_was_already_right():
    from textrouter.evaluate import route_metrics

    # columns direct, tool. rows: tool helps, tool hurts, both right, both wrong
    o = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    m = route_metrics([1, 1, 1, 1], o)  # a call on every row, including the both-right one
    assert m["call_precision"] == pytest.approx(1 / 4)  # only row 0's call changed the answer
    assert m["accuracy"] == pytest.approx(2 / 4)        # the both-right call is still a right answer
    assert route_metrics([0, 0, 1, 0], o)["call_precision"] == 0.0  # the only call: direct was right already


# ---------------------------------------------------------------------------------------------
# reasoner.parse: similarity margin (mutant: SIMILARITY_MARGIN = 0, a tie picks the first option)
# ---------------------------------------------------------------------------------------------

def test_reply_equally_close_to_two_options_is_none():
    from reasoner.parse import parse_answer

    # each option alone is a confident fuzzy match (the threshold is passed) ...
    assert parse_answer("hat meowing", ["cat meowing", "dog barking"]) == (0, "similar")
    assert parse_answer("hat meowing", ["dog barking", "bat meowing"]) == (1, "similar")
    # ... but the reply is exactly as close to both: ambiguous, in either order
    assert parse_answer("hat meowing", ["cat meowing", "bat meowing", "dog barking"]) == (None, "none")
    assert parse_answer("hat meowing", ["bat meowing", "cat meowing"]) == (None, "none")


# ---------------------------------------------------------------------------------------------
# reasoner.openai_backend: HTTP 429 is retried (mutant: only 5xx retried, 429 raises at once)
# ---------------------------------------------------------------------------------------------

def test_429_is_retried_then_succeeds(speech_wav):
    import reasoner
    from openai_server import OpenAITestServer

    with OpenAITestServer(faults=["429", "429"]) as server:
        r = reasoner.create_reasoner("openai", base_url=server.url, model=server.model,
                                     max_retries=3, backoff_s=0.01)
        result = r.answer(speech_wav, "What is heard? [[answer: B]]", ["a dog", "a person speaking", "a car"])
        assert result["index"] == 1 and result["matched_by"] == "exact"
        assert server.request_count == 3  # two rate-limited attempts + the success
        assert [rec["fault"] for rec in server.requests] == ["429", "429", "ok"]


def test_429_that_never_clears_is_unavailable_not_a_bad_request(speech_wav):
    import reasoner
    from openai_server import OpenAITestServer
    from reasoner.errors import ReasonerUnavailable

    with OpenAITestServer(default_fault="429") as server:
        r = reasoner.create_reasoner("openai", base_url=server.url, model=server.model,
                                     max_retries=1, backoff_s=0.01)
        with pytest.raises(ReasonerUnavailable, match="429"):  # a peer problem (exit 3), not bad input
            r.answer(speech_wav, "q?", ["a", "b"])
        assert server.request_count == 2


# ---------------------------------------------------------------------------------------------
# toolcache.audio: stereo down-mix (mutant: takes the left channel only)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sr_file", [16000, 44100])
def test_stereo_downmix_is_the_mean_of_channels_that_differ(tmp_path, sr_file):
    from toolcache.audio import load_audio

    t = np.arange(int(1.0 * sr_file)) / sr_file
    left = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    right = (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    p = tmp_path / f"lr-{sr_file}.wav"
    sf.write(p, np.stack([left, right], axis=1), sr_file, subtype="FLOAT")
    clip = load_audio(p, 16000)
    assert clip.channels == 2
    if sr_file == 16000:  # no resampling: sample-exact mean
        np.testing.assert_allclose(clip.samples, (left + right) / 2, atol=1e-6)
    # power of the mean of two unrelated tones: (0.5^2 + 0.3^2) / 8; left alone would be 0.5^2 / 2
    power = float(np.mean(clip.samples[1000:-1000] ** 2))
    assert power == pytest.approx((0.25 + 0.09) / 8, rel=0.03)
    # both tones are present, at half amplitude each
    spec = np.abs(np.fft.rfft(clip.samples[:16000])) / 8000
    assert spec[440] == pytest.approx(0.25, rel=0.05) and spec[660] == pytest.approx(0.15, rel=0.05)


def test_stereo_downmix_cancels_opposite_channels(tmp_path):
    from toolcache.audio import load_audio

    t = np.arange(16000) / 16000
    x = (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    p = tmp_path / "anti.wav"
    sf.write(p, np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    assert np.abs(load_audio(p, 16000).samples).max() < 1e-6  # mean is silence; left alone is not


# ---------------------------------------------------------------------------------------------
# toolcache.api: the tool's sample rate is part of the cache key (mutant: dropped from the key)
# ---------------------------------------------------------------------------------------------

def _rate_probe(sample_rate: int):
    from toolcache.registry import ToolSpec

    def compute(clip):
        return {"sample_rate": clip.sample_rate, "n_samples": int(clip.samples.size)}

    return ToolSpec(name="test_rate_probe", description="what rate the tool sees", version="1",
                    limits="none", compute=compute, backend=lambda p: "numpy", default_params={},
                    sample_rate=sample_rate)


def test_two_specs_that_differ_only_in_sample_rate_do_not_share_a_cache_entry(tmp_path, monkeypatch):
    import toolcache
    from toolcache.tools import TOOLS

    p = tmp_path / "tone.wav"
    sf.write(p, (0.1 * np.sin(np.arange(32000) * 0.05)).astype(np.float32), 16000)
    wide = _rate_probe(16000)
    monkeypatch.setitem(TOOLS, "test_rate_probe", wide)
    first = toolcache.run("test_rate_probe", p)
    assert first["cached"] is False and first["result"] == {"sample_rate": 16000, "n_samples": 32000}
    key_wide = toolcache.cache_key("test_rate_probe", p)

    narrow = dataclasses.replace(wide, sample_rate=8000)  # same name, version, backend, params
    monkeypatch.setitem(TOOLS, "test_rate_probe", narrow)
    assert toolcache.cache_key("test_rate_probe", p) != key_wide
    second = toolcache.run("test_rate_probe", p)
    assert second["cached"] is False  # not the 16 kHz result
    assert second["result"]["sample_rate"] == 8000 and abs(second["result"]["n_samples"] - 16000) <= 2
    assert second["audio"]["sample_rate"] == 8000
    # both entries stay: switching back is a hit on the 16 kHz one
    monkeypatch.setitem(TOOLS, "test_rate_probe", wide)
    again = toolcache.run("test_rate_probe", p)
    assert again["cached"] is True and again["result"] == first["result"]


def test_a_longer_decode_limit_is_another_cache_entry(tmp_path, monkeypatch):
    """max_seconds is part of the key (mutant: dropped): a 1 s result must not answer a 2 s request."""
    import toolcache
    from toolcache.tools import TOOLS

    p = tmp_path / "long.wav"
    sf.write(p, (0.1 * np.sin(np.arange(48000) * 0.05)).astype(np.float32), 16000)  # 3 s
    monkeypatch.setitem(TOOLS, "test_rate_probe", _rate_probe(16000))
    short = toolcache.run("test_rate_probe", p, max_seconds=1.0)
    assert short["result"]["n_samples"] == 16000 and short["audio"]["truncated"] is True
    longer = toolcache.run("test_rate_probe", p, max_seconds=2.0)
    assert longer["cached"] is False and longer["result"]["n_samples"] == 32000
    assert toolcache.run("test_rate_probe", p, max_seconds=1.0)["cached"] is True


def test_a_clip_cut_at_max_seconds_is_flagged_truncated_with_its_real_length(tmp_path):
    """mutant: the truncation flag / original length of a clip longer than max_seconds is lost."""
    from toolcache.audio import load_audio

    p = tmp_path / "three-seconds.wav"
    sf.write(p, (0.1 * np.sin(np.arange(3 * 16000) * 0.05)).astype(np.float32), 16000)
    cut = load_audio(p, 16000, max_seconds=1.0)
    assert cut.truncated is True and cut.samples.size == 16000
    assert cut.duration_s == pytest.approx(1.0) and cut.original_duration_s == pytest.approx(3.0)
    whole = load_audio(p, 16000, max_seconds=3.0)  # exactly the file's length: nothing left out
    assert whole.truncated is False and whole.original_duration_s == pytest.approx(3.0)
