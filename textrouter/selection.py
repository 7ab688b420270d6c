"""Per-table recipe selection by inner cross-validation (what `audiorouter train` runs by default).

Tables differ (which reward works, how long to train, how eager to call tools), so `train` does
not fix one recipe: it scores a small candidate set by K-fold cross-validation on the user's own
table, keeps the best, and fits the decision rule (textrouter.decision) on the same out-of-fold
probabilities. Every candidate is a head-mode GRPO recipe on frozen (cached) embeddings, so the
whole selection costs seconds. A candidate may be a seed ensemble: S heads trained with seeds
seed..seed+S-1 and averaged (logits are linear in (W, b), so the average is one linear head).

Nested CV (bench/bench_routing.py) runs this whole procedure inside each outer training split,
so the reported figure includes the cost of choosing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

INNER_K = 4  # inner folds: 4 x ~300 rows on a 499-row table after the outer split
MIN_ROWS_FOR_SELECTION = 40  # below this, inner folds of ~10 rows say nothing: keep the first candidate


ACTION_SUBSETS = ("all", "top2")
# "grpo": a head-mode GRPO recipe; "category": textrouter.category's head (P(category | question)
# x per-category action accuracy, as a mixture head or its linear distillation: CATEGORY_HEADS),
# only on tables with categories
CANDIDATE_KINDS = ("grpo", "category")
CATEGORY_HEADS = ("mixture", "linear")  # textrouter.category.fit_category_mixture / fit_category_head
MASKED_LOGIT = -30.0  # bias of an action a candidate leaves out: exp(-30) ~ 1e-13, never chosen


@dataclass(frozen=True)
class Candidate:
    """One head-mode GRPO recipe (textrouter.grpo.TrainOptions fields) + a seed-ensemble size."""

    name: str
    reward: str = "aligned"
    epochs: int = 10
    head_lr: float = 1e-2
    beta: float = 0.01
    ensemble: int = 1
    prior: str = "uniform"
    prior_scale: float = 10.0
    pca: int = 0
    actions: str = "all"   # ACTION_SUBSETS: "all", or "top2" = direct + the tool best on the training rows
    kind: str = "grpo"     # CANDIDATE_KINDS
    shrink: float = 0.0    # kind "category": rows of shrinkage toward the table-wide action accuracy
    head: str = "mixture"  # kind "category": CATEGORY_HEADS, the exact mixture or its linear distillation

    def __post_init__(self) -> None:
        if self.kind not in CANDIDATE_KINDS:
            raise ValueError(f"candidate kind {self.kind!r} unknown; valid: {', '.join(CANDIDATE_KINDS)}")
        if self.head not in CATEGORY_HEADS:
            raise ValueError(f"category head {self.head!r} unknown; valid: {', '.join(CATEGORY_HEADS)}")
        if not self.shrink >= 0:
            raise ValueError(f"shrink must be >= 0 rows, got {self.shrink}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble size must be >= 1, got {self.ensemble}")
        if self.actions not in ACTION_SUBSETS:
            raise ValueError(f"actions {self.actions!r} unknown; valid: {', '.join(ACTION_SUBSETS)}")

    def options(self, base, seed: int):
        """TrainOptions of ensemble member `seed` on top of `base` (encoder, max_length, batch size)."""
        from .grpo import RewardConfig, TrainOptions

        return TrainOptions(**{**base.__dict__, "mode": "head", "reward": RewardConfig(kind=self.reward),
                               "epochs": self.epochs, "head_lr": self.head_lr, "beta": self.beta, "seed": seed,
                               "prior": self.prior, "prior_scale": self.prior_scale, "pca": self.pca})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Candidate sets (name -> candidates); "auto" is what `audiorouter train` scores by default.
# Chosen by nested CV on the bundled table (bench/bench_routing.py, 3 seeds x 5 outer folds, docs/
# router-training.md): 5-seed ensembles, 30 epochs, an accuracy-leaning initial policy, a 32-dim
# PCA head and a direct+best-tool subset all scored within +-0.5 points of these two on sets A, B
# and C (no gain under nested CV) and were left out; the reward choice (aligned / relative) is kept
# because tables differ in it (relative wins on some set-B outer folds).
CANDIDATE_SETS: dict[str, tuple[Candidate, ...]] = {
    "auto": (
        Candidate("aligned-10ep", "aligned", 10, 1e-2, 0.01, 1),
        Candidate("relative-10ep", "relative", 10, 1e-2, 0.01, 1),
        Candidate("category-s0", kind="category", shrink=0.0),
        Candidate("category-s5", kind="category", shrink=5.0),
    ),
    "grpo": (
        Candidate("aligned-10ep", "aligned", 10, 1e-2, 0.01, 1),
        Candidate("relative-10ep", "relative", 10, 1e-2, 0.01, 1),
    ),
    "single": (Candidate("aligned-10ep", "aligned", 10, 1e-2, 0.01, 1),),
    "category": (Candidate("category-s0", kind="category", shrink=0.0),
                 Candidate("category-s5", kind="category", shrink=5.0)),
    # the category heads distilled into one linear head (the default until stop 21)
    "category-linear": (Candidate("category-s0-linear", kind="category", shrink=0.0, head="linear"),
                        Candidate("category-s5-linear", kind="category", shrink=5.0, head="linear")),
    # measured alternatives, kept runnable for the bench (`--candidates wide`)
    "wide": (
        Candidate("aligned-10ep", "aligned", 10, 1e-2, 0.01, 1),
        Candidate("relative-10ep", "relative", 10, 1e-2, 0.01, 1),
        Candidate("aligned-30ep", "aligned", 30, 1e-2, 0.01, 1),
        Candidate("aligned-10ep-x5", "aligned", 10, 1e-2, 0.01, 5),
        Candidate("aligned-10ep-prior", "aligned", 10, 1e-2, 0.01, 1, prior="accuracy"),
        Candidate("aligned-10ep-top2", "aligned", 10, 1e-2, 0.01, 1, actions="top2"),
    ),
}


def available_candidate_sets() -> list[str]:
    return list(CANDIDATE_SETS)


def get_candidates(name: str) -> tuple[Candidate, ...]:
    if name not in CANDIDATE_SETS:
        raise ValueError(f"candidate set {name!r} unknown; valid: {', '.join(CANDIDATE_SETS)}")
    return CANDIDATE_SETS[name]


def usable(candidates: Sequence[Candidate], cats) -> list[Candidate]:
    """The candidates `select` scores on a table: with category codes, the category candidates
    alone when the set has any (under nested CV they beat the GRPO heads on sets A and B and tie
    on C, and scoring both lost up to 0.8 points to the inner-CV choice: docs/router-training.md);
    without codes, the others."""
    if cats is not None and any(c.kind == "category" for c in candidates):
        return [c for c in candidates if c.kind == "category"]
    return [c for c in candidates if c.kind != "category"]


def fit_ensemble(x, o, cand: Candidate, base, seed: int = 0, cats=None, n_cats: int | None = None):
    """(W, b) numpy: the average of `cand.ensemble` head-mode GRPO heads (seeds seed, seed+1, ...);
    for a category candidate, textrouter.category's head on category codes `cats` [N]."""
    from .grpo import train_head

    o = np.asarray(o)
    if cand.kind == "category":
        from .category import fit_category_head, fit_category_mixture

        if cats is None:
            raise ValueError(f"candidate {cand.name} needs category codes (the table has no category column)")
        fit = fit_category_mixture if cand.head == "mixture" else fit_category_head
        return fit(x, np.asarray(cats), o, cand.shrink, n_cats)
    keep = np.arange(o.shape[1])
    if cand.actions == "top2":  # direct + the single tool with the best training accuracy
        keep = np.array([0, 1 + int(np.argmax(o[:, 1:].mean(0)))])
    ws, bs = [], []
    for s in range(cand.ensemble):
        w, b = train_head(x, o[:, keep], cand.options(base, seed + s)).head
        ws.append(w)
        bs.append(b)
    w = np.zeros((o.shape[1], np.asarray(x).shape[1]), np.float32)
    b = np.full(o.shape[1], MASKED_LOGIT, np.float32)
    w[keep], b[keep] = np.mean(ws, 0), np.mean(bs, 0)
    return w, b


def oof_probs(x, o, cand: Candidate, base, k: int = INNER_K, seed: int = 0, cats=None, n_cats=None):
    """Out-of-fold probabilities [N, A] of `cand` by a seeded K-fold split of (x, o)."""
    from .evaluate import kfold_indices
    from .grpo import head_probs

    x, o = np.asarray(x), np.asarray(o)
    out = np.zeros(o.shape, dtype=np.float64)
    for tr, te in kfold_indices(len(o), k, seed + 7):
        sub = None if cats is None else np.asarray(cats)[tr]
        out[te] = head_probs(x[te], fit_ensemble(x[tr], o[tr], cand, base, seed, sub, n_cats))
    return out


@dataclass
class Selection:
    candidate: Candidate
    rule: Any                      # textrouter.decision.DecisionRule
    scores: dict[str, float]       # candidate name -> inner-CV accuracy with its fitted rule
    inner_k: int
    report: dict[str, Any]


def select(x, o, actions: Sequence[str], base, candidates: Sequence[Candidate], seed: int = 0,
           costs=None, max_tool_rate: float = 1.0, k: int = INNER_K, grid="default",
           on_step: Callable[[int, int], None] | None = None, cats=None, n_cats: int | None = None,
           fit_margin: bool | None = None) -> Selection:
    """Score each candidate by inner K-fold CV (with its decision rule fitted on the out-of-fold
    probabilities), keep the best (ties: the earlier, i.e. simpler, candidate). `cats`: the rows'
    category codes (textrouter.category.category_codes), None: category candidates are skipped.
    `fit_margin`: fit the decision margin on the out-of-fold probabilities (True), keep the argmax
    (False), or None: fit only when a budget or tool costs are given."""
    from .decision import fit_rule

    o = np.asarray(o)
    n = len(o)
    k = min(k, n)
    candidates = usable(candidates, cats)
    if not candidates:
        raise ValueError("every candidate needs category codes and the table has none; use --recipe head")
    # No budget and no tool costs: route by argmax (margin 0). A margin fitted on the inner folds
    # lost 0.9 / 1.6 points on sets A / B under nested CV and gained 0.4 on C (noise on ~300
    # rows); with a budget or costs the margin is fitted (that is what they ask for).
    free = max_tool_rate >= 1.0 and all(float(c) == 1.0 for c in (costs or {}).values())
    if fit_margin is not None:
        free = not fit_margin
    if n < MIN_ROWS_FOR_SELECTION or k < 2:
        # too small to cross-validate: first candidate, argmax-equivalent rule fitted in-sample
        cand = candidates[0]
        from .grpo import head_probs

        probs = head_probs(x, fit_ensemble(x, o, cand, base, seed, cats, n_cats))
        rule = fit_rule(probs, o, actions, costs, max_tool_rate, source=f"in-sample ({n} rows: too few for CV)",
                        **({"grid": (0.0,)} if free else {}))
        return Selection(cand, rule, {}, 0, {"note": f"{n} rows: too few for inner CV (first candidate kept)",
                                             "inner_k": 0, "scores": {}, "cv_accuracy": None,
                                             "cv_tool_call_rate": None, "always_direct": float(o[:, 0].mean()),
                                             "best_single": float(o.mean(0).max())})
    fits, scores = {}, {}
    total = len(candidates)
    for i, cand in enumerate(candidates, 1):
        probs = oof_probs(x, o, cand, base, k, seed, cats, n_cats)
        if grid != "default":
            kw = {"grid": grid}
        else:
            kw = {"grid": (0.0,)} if free else {}
        rule = fit_rule(probs, o, actions, costs, max_tool_rate, source=f"{k}-fold inner CV, {cand.name}", **kw)
        ch = rule.choose(probs)
        scores[cand.name] = float(o[np.arange(n), ch].mean())
        fits[cand.name] = (cand, rule, probs)
        if on_step:
            on_step(i, total)
    best = max(candidates, key=lambda c: (round(scores[c.name], 9), -candidates.index(c)))
    cand, rule, probs = fits[best.name]
    oof_best = probs.argmax(1)
    report = {
        "inner_k": k,
        "scores": scores,
        "chosen": best.name,
        "cv_accuracy": scores[best.name],          # selection-biased (the max over candidates)
        "cv_argmax_accuracy": float(o[np.arange(n), oof_best].mean()),
        "cv_tool_call_rate": float((rule.choose(probs) != 0).mean()),
        "always_direct": float(o[:, 0].mean()),
        "best_single": float(o.mean(0).max()),
    }
    return Selection(cand, rule, scores, k, report)
