"""GRPO maths and the head-mode trainer on synthetic features (the encoder is tested in the CLI tests)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from textrouter.grpo import RewardConfig, TrainOptions, grpo_loss, head_probs, train_head

# outcome rows (direct, tool): tool-right&direct-wrong, tool-wrong&direct-right, both right, both wrong
CASES = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])


def test_relative_reward_is_the_papers():
    r = RewardConfig(kind="relative").matrix(CASES)
    np.testing.assert_allclose(r, [[-1, 5], [1, -5], [1, -0.1], [-1, -0.1]], rtol=1e-6)
    assert RewardConfig(kind="absolute").matrix(CASES).tolist() == [[-1, 1], [1, -1], [1, 1], [-1, -1]]
    aligned = RewardConfig(kind="aligned").matrix(CASES)
    assert aligned.tolist() == [[0, 5], [0, -5], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="relative, aligned, absolute"):
        RewardConfig(kind="accuracy")


def _grad(kind, outcomes, logits, group="exhaustive", idx=None):
    opts = TrainOptions(mode="head", reward=RewardConfig(kind=kind), beta=0.0, group=group)
    z = torch.tensor(logits, requires_grad=True)
    r = torch.as_tensor(opts.reward.matrix(outcomes))
    loss, _ = grpo_loss(z, z.detach(), z.detach(), r, opts, idx)
    loss.backward()
    return z.grad.numpy()


def test_aligned_equals_absolute_after_group_normalisation_but_relative_does_not():
    rng = np.random.RandomState(0)
    o = rng.randint(0, 2, size=(64, 3))
    logits = rng.randn(64, 3).astype(np.float32)
    g_al, g_abs, g_rel = (_grad(k, o, logits) for k in ("aligned", "absolute", "relative"))
    np.testing.assert_allclose(g_al, g_abs, atol=1e-5)
    assert np.abs(g_rel - g_abs).max() > 0.1 * np.abs(g_abs).max()
    # the paper's reward pushes a tool call when everything is wrong; aligned gives no push
    both_wrong = np.zeros((1, 2), int)
    assert _grad("relative", both_wrong, np.zeros((1, 2), np.float32))[0, 1] < 0  # loss falls as tool logit rises
    assert np.abs(_grad("aligned", both_wrong, np.zeros((1, 2), np.float32))).max() == 0


def test_sampled_groups_converge_to_exhaustive():
    """Exhaustive groups are the G -> infinity limit of sampled GRPO (same expected gradient)."""
    rng = np.random.RandomState(1)
    o = rng.randint(0, 2, size=(8, 3))
    logits = rng.randn(8, 3).astype(np.float32)
    exact = _grad("absolute", o, logits)
    gen = torch.Generator().manual_seed(0)
    idx = torch.multinomial(torch.tensor(logits).softmax(-1), 20000, replacement=True, generator=gen)
    approx = _grad("absolute", o, logits, group="sampled", idx=idx)
    small = _grad("absolute", o, logits, group="sampled", idx=idx[:, :4])
    assert np.abs(approx - exact).max() < 0.02
    assert np.abs(small - exact).max() > np.abs(approx - exact).max()


def test_clipping_and_kl():
    opts = TrainOptions(mode="head", beta=0.0, clip_eps=0.2)
    r = torch.tensor([[0.0, 5.0]])  # tool better: positive advantage for action 1
    old = torch.zeros(1, 2)
    far = torch.tensor([[0.0, 3.0]], requires_grad=True)  # ratio of action 1 far above 1.2: clipped
    loss, _ = grpo_loss(far, old, old, r, opts)
    loss.backward()
    assert far.grad[0, 1] == 0  # clipped: no further push on the favoured action
    near = torch.tensor([[0.0, 0.1]], requires_grad=True)
    grpo_loss(near, old, old, r, opts)[0].backward()
    assert near.grad[0, 1] < 0
    # exact KL is zero at the reference and positive away from it
    _, s0 = grpo_loss(old.clone(), old, old, r, TrainOptions(mode="head"))
    _, s1 = grpo_loss(far.detach(), old, old, r, TrainOptions(mode="head"))
    assert s0["kl"] == 0 and s1["kl"] > 0.5


def synthetic(n=400, seed=0):
    """Feature 0 says whether the tool helps (tool right, direct wrong) or hurts."""
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 16).astype(np.float32)
    helps = x[:, 0] > 0
    o = np.stack([(~helps).astype(int), helps.astype(int)], 1)
    return x, o


@pytest.mark.parametrize("group", ["exhaustive", "sampled"])
def test_head_mode_learns_and_is_deterministic(group):
    x, o = synthetic(200)
    opts = TrainOptions(mode="head", epochs=40, group=group, seed=3, batch_size=50)
    a = train_head(x, o, opts)
    b = train_head(x, o, opts)
    c = train_head(x, o, TrainOptions(mode="head", epochs=40, group=group, seed=4, batch_size=50))
    pa, pb, pc = head_probs(x, a.head), head_probs(x, b.head), head_probs(x, c.head)
    np.testing.assert_array_equal(pa, pb)  # same seed => identical probabilities
    assert not np.array_equal(pa, pc)
    acc = o[np.arange(len(o)), pa.argmax(1)].mean()
    assert acc > 0.9  # always-direct would score 0.5
    assert a.curve[-1]["reward"] > a.curve[0]["reward"]


def test_options_validation():
    with pytest.raises(ValueError, match="head, lora"):
        TrainOptions(mode="full")
    with pytest.raises(ValueError, match="exhaustive, sampled"):
        TrainOptions(group="all")
    assert TrainOptions(mode="lora").n_epochs == 1 and TrainOptions(mode="lora").n_head_lr > TrainOptions().lr


def test_inner_iterations_reuse_the_group():
    """mu > 1: several clipped steps on the same groups; the ratio departs from 1 and is clipped."""
    x, o = synthetic(100)
    one = train_head(x, o, TrainOptions(mode="head", epochs=2, batch_size=50, seed=0))
    four = train_head(x, o, TrainOptions(mode="head", epochs=2, batch_size=50, seed=0, inner_iters=4))
    assert len(four.curve) == len(one.curve) == 4
    assert not np.allclose(head_probs(x, one.head), head_probs(x, four.head))
