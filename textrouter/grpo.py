"""GRPO for a K-action classification policy on an offline outcome table.

Offline, every action's outcome on every training question is known (the outcome table), so a
"rollout" is a table look-up: no reasoner runs during training. Per question q (a group):

    rewards   r_a          from `RewardConfig` and the row's outcomes (relative, aligned or absolute)
    advantage A_a = (r_a - mean_G r) / (std_G r + eps)         group-normalised (GRPO)
    ratio     rho_a = pi_theta(a|q) / pi_old(a|q)               pi_old = policy at the group's sampling
    objective J = E_{a in G} [min(rho_a A_a, clip(rho_a, 1-e, 1+e) A_a)] - beta KL(pi_theta || pi_ref)

Groups: `sampled` draws G actions from pi_old (the paper); `exhaustive` takes each action once,
weighted by pi_old(a) — mean/std/expectation under pi_old instead of over G samples, i.e. the
G -> infinity limit of sampled GRPO without sampling noise. The KL to the frozen initial policy is the
exact categorical KL (K is small, so no k3 estimator is needed).

TRL's GRPOTrainer is not used: it trains a generative causal LM from sampled text completions scored
by reward functions; this policy is a classifier over K actions (see docs/router-training.md).

Two modes produce the same checkpoint: `lora` (paper: LoRA on the encoder + linear head, one
epoch) and `head` (frozen encoder, cached embeddings, only the head trained; seconds, for CV).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from .encoders import DEFAULT_ENCODER, get_encoder
from .errors import RouterError
from .model import LoraOptions, policy_from_head  # noqa: F401  (re-exported: older callers)

REWARDS = ("relative", "aligned", "absolute")
GROUPS = ("exhaustive", "sampled")
MODES = ("head", "lora")
# Initial policy of a head (also the KL reference): uniform, or leaning to the actions that are
# right most often on the training rows (bias = prior_scale x accuracy), so GRPO moves away from
# "best single action" only where the table shows a gain.
PRIORS = ("uniform", "accuracy")


def available_rewards() -> list[str]:
    return list(REWARDS)


@dataclass(frozen=True)
class RewardConfig:
    """Reward per (question, action) from the outcomes; action 0 is direct.

    relative (paper): tool +tool_gain if tool right & direct wrong, tool_loss if tool wrong & direct
      right, tool_tie if both the same; direct: direct_right / direct_wrong. Misaligned with accuracy:
      when every action is wrong, a tool call (-0.1) beats a direct answer (-1), and group
      normalisation turns that small gap into a full-strength push toward calling a tool.
    aligned (default): the paper's relative form with that fixed: tool tool_gain * (tool right -
      direct right) - call_cost, direct 0; same outcome => same reward => no push either way. With
      call_cost 0 its group-normalised advantages equal those of `absolute` (a per-question shift
      and scale), i.e. it optimises routed accuracy. A call_cost > 0 is amplified by the std
      normalisation on every tie (measured: it collapses the router to always-direct).
    absolute: every action +1 right / -1 wrong (no call cost).
    """

    kind: str = "aligned"
    tool_gain: float = 5.0
    tool_loss: float = -5.0
    tool_tie: float = -0.1
    direct_right: float = 1.0
    direct_wrong: float = -1.0
    call_cost: float = 0.0  # aligned only: reward subtracted from every tool call

    def __post_init__(self) -> None:
        if self.kind not in REWARDS:
            raise ValueError(f"reward {self.kind!r} unknown; valid: {', '.join(REWARDS)}")
        if self.call_cost < 0:
            raise ValueError(f"call_cost must be >= 0, got {self.call_cost}")

    def matrix(self, outcomes):
        """float32 [N, A] rewards from int outcomes [N, A] (column 0 = direct)."""
        import numpy as np

        o = np.asarray(outcomes, dtype=np.float32)
        d = o[:, :1]
        if self.kind == "absolute":
            return (2 * o - 1).astype(np.float32)
        if self.kind == "aligned":
            r = np.zeros_like(o)
            r[:, 1:] = self.tool_gain * (o[:, 1:] - d) - self.call_cost
            return r.astype(np.float32)
        tools = o[:, 1:]
        r_tools = np.where((tools == 1) & (d == 0), self.tool_gain,
                           np.where((tools == 0) & (d == 1), self.tool_loss, self.tool_tie))
        r_direct = np.where(d == 1, self.direct_right, self.direct_wrong)
        return np.concatenate([r_direct, r_tools], axis=1).astype(np.float32)


@dataclass(frozen=True)
class TrainOptions:
    mode: str = "lora"
    epochs: int | None = None          # None: 1 in lora mode (paper), HEAD_EPOCHS in head mode
    lr: float = 5e-5                   # LoRA adapters
    head_lr: float | None = None       # None: 1e-3 in lora mode, 1e-2 in head mode
    beta: float = 0.01                 # KL weight to the frozen initial policy
    clip_eps: float = 0.2
    inner_iters: int = 1               # mu: optimisation steps on the same groups
    group: str = "exhaustive"
    group_size: int = 8                # G, sampled groups only
    batch_size: int | None = None      # questions per step; None: 16 (lora) / 32 (head)
    max_length: int = 128              # tokens
    seed: int = 0
    reward: RewardConfig = field(default_factory=RewardConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)
    adv_eps: float = 1e-6
    direct_prior: float = 0.0          # initial logit bias of `direct` (the KL reference leans to it)
    encoder: str = DEFAULT_ENCODER     # textrouter.encoders: minilm (paper) or minilm-static (fast)
    prior: str = "uniform"             # head mode: initial (= KL reference) policy; PRIORS
    prior_scale: float = 10.0          # prior "accuracy": logit per unit of training accuracy
    pca: int = 0                       # head mode: train on the top-k principal directions (0 = all)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} unknown; valid: {', '.join(MODES)}")
        spec = get_encoder(self.encoder)
        if self.mode not in spec.modes:
            raise ValueError(f"encoder {self.encoder} trains in mode {', '.join(spec.modes)} only (got mode "
                             f"{self.mode!r}); use --mode {spec.modes[0]} or --encoder minilm")
        if self.group not in GROUPS:
            raise ValueError(f"group {self.group!r} unknown; valid: {', '.join(GROUPS)}")
        if self.group_size < 2:
            raise ValueError(f"group size must be >= 2, got {self.group_size}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name, v in (("--lr", self.lr), ("--head-lr", self.head_lr)):
            # `not v > 0` also catches nan (nan <= 0 is False): a NaN rate trains a NaN router
            if v is not None and (not math.isfinite(v) or not v > 0):
                raise ValueError(f"{name} {v} must be a finite number > 0 (e.g. {name} {1e-2 if 'head' in name else 5e-5:g})")
        if not math.isfinite(self.beta) or not math.isfinite(self.prior_scale):
            raise ValueError(f"--beta and prior_scale must be finite (got {self.beta}, {self.prior_scale})")
        if self.beta < 0 or not 0 < self.clip_eps < 1 or self.inner_iters < 1:
            raise ValueError("need beta >= 0, 0 < clip_eps < 1, inner_iters >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior {self.prior!r} unknown; valid: {', '.join(PRIORS)}")
        if self.pca < 0:
            raise ValueError(f"pca must be >= 0 (0 = all dimensions), got {self.pca}")

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else (1 if self.mode == "lora" else HEAD_EPOCHS)

    @property
    def n_head_lr(self) -> float:
        # The head is freshly initialised (near-zero weights, uniform policy): at the LoRA rate of 5e-5
        # it would hardly move in one epoch (~30 steps), so it learns at a higher rate while the
        # pretrained encoder is nudged gently by LoRA.
        return self.head_lr if self.head_lr is not None else (1e-3 if self.mode == "lora" else 1e-2)

    @property
    def n_batch(self) -> int:
        return self.batch_size if self.batch_size is not None else (16 if self.mode == "lora" else 32)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(epochs=self.n_epochs, head_lr=self.n_head_lr, batch_size=self.n_batch)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d


HEAD_EPOCHS = 10  # chosen by 5-fold CV on the bundled table (10-30 beat 100: fewer epochs overfit less)


def grpo_loss(logits, logits_old, logits_ref, rewards, opts: TrainOptions, sampled_idx=None):
    """(loss, stats) for one batch of groups. logits* [B, A]; rewards [B, A]; sampled_idx [B, G] or None."""
    import torch
    import torch.nn.functional as F

    logp = F.log_softmax(logits, dim=-1)
    logp_old = F.log_softmax(logits_old.detach(), dim=-1)
    eps = opts.adv_eps
    if sampled_idx is None:  # exhaustive: expectations under pi_old over all actions
        w = logp_old.exp()
        mean = (w * rewards).sum(-1, keepdim=True)
        std = ((w * (rewards - mean) ** 2).sum(-1, keepdim=True)).sqrt()
        adv = (rewards - mean) / (std + eps)
        ratio = (logp - logp_old).exp()
        surr = torch.minimum(ratio * adv, ratio.clamp(1 - opts.clip_eps, 1 + opts.clip_eps) * adv)
        objective = (w * surr).sum(-1)
        mean_reward = mean.squeeze(-1)
    else:
        r = rewards.gather(1, sampled_idx)
        mean = r.mean(1, keepdim=True)
        adv = (r - mean) / (r.std(1, keepdim=True, unbiased=False) + eps)
        ratio = (logp.gather(1, sampled_idx) - logp_old.gather(1, sampled_idx)).exp()
        surr = torch.minimum(ratio * adv, ratio.clamp(1 - opts.clip_eps, 1 + opts.clip_eps) * adv)
        objective = surr.mean(1)
        mean_reward = mean.squeeze(-1)
    p = logp.exp()
    kl = (p * (logp - F.log_softmax(logits_ref.detach(), dim=-1))).sum(-1)  # exact categorical KL
    loss = -(objective - opts.beta * kl).mean()
    stats = {"reward": float(mean_reward.detach().mean()), "kl": float(kl.detach().mean()),
             "tool_rate": float((logits.detach().argmax(-1) != 0).float().mean())}
    return loss, stats


@dataclass
class TrainResult:
    policy: Any                      # RouterPolicy (merged) or None for train_head
    head: tuple[Any, Any] | None     # (W [A, 384], b [A]) numpy in head mode
    curve: list[dict[str, float]]
    elapsed_s: float
    options: TrainOptions


StepCallback = Callable[[int, int, dict[str, float]], None]


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # The CPU kernels used here (matmul, softmax, AdamW) are deterministic for a fixed thread count,
    # so seeds suffice (tests check identical probabilities). torch.use_deterministic_algorithms
    # is not called: its first call imports torch's compiler stack (~20 s on a busy 2-core machine).


class _Adam:
    """Adam (no weight decay) over parameter groups [(params, lr)]. Same update as torch.optim.Adam;
    hand-written because the first torch.optim optimizer in a process imports torch's compiler
    stack (~20 s on a busy 2-core machine), longer than a whole head-mode training run."""

    def __init__(self, groups, betas=(0.9, 0.999), eps=1e-8):
        import torch

        self.groups = [([p for p in params], lr) for params, lr in groups]
        self.b1, self.b2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}
        self.v = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}

    def zero_grad(self) -> None:
        for ps, _ in self.groups:
            for p in ps:
                p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        with torch.no_grad():
            for ps, lr in self.groups:
                for p in ps:
                    if p.grad is None:
                        continue
                    m, v = self.m[id(p)], self.v[id(p)]
                    m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                    v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                    p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-lr)


def _batches(n: int, batch: int, epochs: int, seed: int):
    import numpy as np

    rng = np.random.RandomState(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            yield order[s:s + batch]


def train_head(features, outcomes, opts: TrainOptions, on_step: StepCallback | None = None) -> TrainResult:
    """GRPO on a linear head over frozen embeddings [N, 384]; returns (W, b) in `head`."""
    import torch

    if opts.mode != "head":
        opts = TrainOptions(**{**opts.__dict__, "mode": "head"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over shared cores
    try:
        return _train_head(features, outcomes, opts, on_step)
    finally:
        torch.set_num_threads(threads)


def _train_head(features, outcomes, opts: TrainOptions, on_step: StepCallback | None) -> TrainResult:
    import numpy as np
    import torch

    _seed_everything(opts.seed)
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    rewards = torch.as_tensor(opts.reward.matrix(outcomes))
    n, a = rewards.shape
    if n == 0:
        raise RouterError("no training rows (the table or fold is empty); give a table with rows")
    # Encoders whose feature scale differs from MiniLM's: centre the features on these rows and
    # divide by one global std (a scalar keeps the distilled geometry; per-dimension z-scores
    # amplified near-constant dimensions, measured). Folded back into (W, b) below, so the
    # returned head applies to raw features.
    scaled = get_encoder(opts.encoder).standardize
    mu = x.mean(0) if scaled else torch.zeros(x.shape[1])
    sd = (x - mu).std(unbiased=False) + 1e-9 if scaled else torch.ones(())
    x = (x - mu) / sd
    proj = None
    if opts.pca and opts.pca < min(x.shape):
        # top-k principal directions of the (centred) training features: fewer free weights on a
        # few hundred rows; folded back below (W_k P^T acts on the full features)
        xc = x - x.mean(0)
        _, _, vt = torch.linalg.svd(xc, full_matrices=False)
        proj = vt[:opts.pca].T.contiguous()            # [D, k]
        x = x @ proj
    head = torch.nn.Linear(x.shape[1], a)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.bias[0] = opts.direct_prior
        if opts.prior == "accuracy":
            acc = torch.as_tensor(np.asarray(outcomes, dtype=np.float32).mean(0))
            head.bias.copy_(opts.prior_scale * (acc - acc.max()))
    ref_w, ref_b = head.weight.detach().clone(), head.bias.detach().clone()
    optim = _Adam([(head.parameters(), opts.n_head_lr)])
    gen = torch.Generator().manual_seed(opts.seed)
    steps = opts.n_epochs * ((n + opts.n_batch - 1) // opts.n_batch)
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step, idx in enumerate(_batches(n, opts.n_batch, opts.n_epochs, opts.seed), 1):
        xb, rb = x[idx], rewards[idx]
        ref = xb @ ref_w.T + ref_b
        stats = _grpo_update(lambda: head(xb), ref, rb, opts, optim, gen)
        stats["step"] = step
        curve.append(stats)
        if on_step:
            on_step(step, steps, stats)
    with torch.no_grad():
        w_full = head.weight @ proj.T if proj is not None else head.weight
        w_t = w_full / sd                      # W (x - mu) / sd + b = (W / sd) x + (b - (W / sd) mu)
        b_t = head.bias - w_t @ mu
    w = w_t.numpy().copy()
    b = b_t.numpy().copy()
    return TrainResult(None, (w, b), curve, time.perf_counter() - t0, opts)


def _grpo_update(forward, ref, rewards, opts: "TrainOptions", optim, gen) -> dict[str, float]:
    """One GRPO update on a batch of groups: `inner_iters` steps against the first pass's policy.

    `forward()` returns logits [batch, actions]; pi_old is the first pass (detached), from which a
    sampled group draws its G actions once, so every inner step scores the same group.
    """
    import torch

    sampled = None
    for it in range(opts.inner_iters):
        logits = forward()
        if it == 0:
            logits_old = logits.detach()
            if opts.group == "sampled":
                sampled = torch.multinomial(logits_old.softmax(-1), opts.group_size, replacement=True,
                                            generator=gen)
        loss, stats = grpo_loss(logits, logits_old, ref, rewards, opts, sampled)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return stats


def train_lora(texts: Sequence[str], outcomes, actions: Sequence[str], opts: TrainOptions,
               on_step: StepCallback | None = None) -> TrainResult:
    """GRPO on LoRA adapters + head (the paper's recipe). Returns the merged policy."""
    import torch

    from .embed_cache import encode
    from .model import build_policy, merge_lora

    _seed_everything(opts.seed)
    ids, mask, _ = encode(texts, opts.max_length)
    ids_t, mask_t = torch.as_tensor(ids), torch.as_tensor(mask)
    rewards = torch.as_tensor(opts.reward.matrix(outcomes))
    n = rewards.shape[0]
    if n == 0:
        raise RouterError("no training rows (the table or fold is empty); give a table with rows")
    policy = build_policy(actions, opts.lora, seed=opts.seed)
    with torch.no_grad():
        policy.head.bias[0] = opts.direct_prior
    ref_head = torch.nn.Linear(policy.head.in_features, policy.head.out_features)
    ref_head.load_state_dict(policy.head.state_dict())
    lora_params = [p for n_, p in policy.encoder.named_parameters() if p.requires_grad]
    optim = _Adam([(lora_params, opts.lr), (policy.head.parameters(), opts.n_head_lr)])
    gen = torch.Generator().manual_seed(opts.seed)
    steps = opts.n_epochs * ((n + opts.n_batch - 1) // opts.n_batch)
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step, idx in enumerate(_batches(n, opts.n_batch, opts.n_epochs, opts.seed), 1):
        idx_t = torch.as_tensor(idx)
        # trim padding to the longest real sequence in this batch (tokens)
        length = int(mask_t[idx_t].sum(1).max())
        ib, mb, rb = ids_t[idx_t, :length], mask_t[idx_t, :length], rewards[idx_t]
        policy.eval()  # reference = frozen initial policy: base encoder (adapters off) + initial head
        with torch.no_grad(), policy.encoder.disable_adapter():
            ref = ref_head(policy.embed(ib, mb))
        policy.train()
        stats = _grpo_update(lambda: policy(ib, mb), ref, rb, opts, optim, gen)
        stats["step"] = step
        curve.append(stats)
        if on_step:
            on_step(step, steps, stats)
    policy = merge_lora(policy).eval()
    return TrainResult(policy, None, curve, time.perf_counter() - t0, opts)


def head_probs(features, head) -> Any:
    """Softmax probabilities [N, A] of a numpy head, linear (W, b) or mixture (W, b, M)
    (textrouter.head), on embeddings [N, D]."""
    from .head import head_probs as probs

    return probs(features, head)


def policy_probs(policy, texts: Sequence[str], max_length: int = 128, batch_size: int = 64):
    """Softmax probabilities [N, A] of a torch policy on router texts."""
    import numpy as np
    import torch

    from .embed_cache import encode

    ids, mask, _ = encode(texts, max_length)
    out = []
    policy.eval()
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            ib, mb = torch.as_tensor(ids[s:s + batch_size]), torch.as_tensor(mask[s:s + batch_size])
            length = int(mb.sum(1).max())
            out.append(policy(ib[:, :length], mb[:, :length]).softmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def save_curve_png(curve: Sequence[dict[str, float]], path, title: str = "GRPO training") -> None:
    """Mean reward and tool-call rate per step (smoothed) as a PNG."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([c["step"] for c in curve])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax2 = ax.twinx()
    for key, label, color, axis in (("reward", "mean reward", "tab:blue", ax),
                                    ("tool_rate", "tool-call rate (argmax)", "tab:orange", ax2)):
        y = np.array([c[key] for c in curve])
        k = max(1, len(y) // 30)  # moving average over ~1/30 of the run
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        axis.plot(steps[k - 1:], smooth, label=label, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward (under policy)")
    ax2.set_ylabel("tool-call rate")
    ax2.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
