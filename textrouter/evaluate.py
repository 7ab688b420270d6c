"""Routed accuracy of a router next to its baselines, on a table or with K-fold cross-validation.

Metrics of a choice of actions `chosen [N]` on outcomes `O [N, A]` (column 0 = direct):
- accuracy: mean O[i, chosen[i]] (overall and per `task` metadata field, for analysis only);
- tool_call_rate: share of questions routed to a tool;
- call_precision: calls that changed the answer for the better (tool right, direct wrong) / calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import baselines as B
from .grpo import TrainOptions

GRPO = "GRPO router"
RANDOM = "random (expected)"
ORACLE = "oracle"


def route_metrics(chosen, outcomes, tasks: Sequence[str] | None = None) -> dict[str, Any]:
    o = np.asarray(outcomes)
    c = np.asarray(chosen, dtype=np.int64)
    n = len(c)
    correct = o[np.arange(n), c].astype(np.float64)
    calls = c != 0
    helped = calls & (o[np.arange(n), c] == 1) & (o[:, 0] == 0)
    out: dict[str, Any] = {
        "accuracy": float(correct.mean()) if n else float("nan"),
        "tool_call_rate": float(calls.mean()) if n else float("nan"),
        "call_precision": float(helped.sum() / calls.sum()) if calls.any() else None,
        "n": n,
    }
    if tasks is not None:
        t = np.asarray(list(tasks))
        out["per_task"] = {str(k): float(correct[t == k].mean()) for k in sorted(set(t.tolist()))}
    return out


def _fixed_metrics(acc: float, n: int, per_task: dict[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"accuracy": acc, "tool_call_rate": None, "call_precision": None, "n": n}
    if per_task is not None:
        out["per_task"] = per_task
    return out


def compare(chosen, train_x, train_o, test_x, test_o, actions: Sequence[str],
            tasks: Sequence[str] | None = None, router_name: str = GRPO) -> dict[str, dict[str, Any]]:
    """method -> metrics on the test part: the router's `chosen` actions next to every baseline."""
    test_o = np.asarray(test_o)
    n = len(test_o)
    results = {router_name: route_metrics(chosen, test_o, tasks)}
    for name, fn in B.available_baselines(list(actions)).items():
        if name.startswith("supervised") and train_x is None:
            continue
        results[name] = route_metrics(fn(train_x, train_o, test_x, n), test_o, tasks)
    t = None if tasks is None else np.asarray(list(tasks))
    per = (lambda f: {str(k): f(test_o[t == k]) for k in sorted(set(t.tolist()))}) if t is not None else (lambda f: None)
    results[RANDOM] = _fixed_metrics(B.random_expected(test_o), n, per(B.random_expected))
    results[ORACLE] = _fixed_metrics(B.oracle_accuracy(test_o), n, per(B.oracle_accuracy))
    return results


def crossfit_choices(x, o, actions: Sequence[str], k: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-out choices of the fitted baselines (best single, supervised) on ONE table, by K-fold
    cross-fitting: each row's choice comes from a baseline fit on the other folds. `x` None: the
    supervised baseline is left out (no features, e.g. a core install without torch)."""
    o = np.asarray(o)
    n = len(o)
    k = max(2, min(k, n))
    out = {"best single": np.zeros(n, np.int64)}
    if x is not None:
        out["supervised (logreg per action)"] = np.zeros(n, np.int64)
    for tr, te in kfold_indices(n, k, seed):
        out["best single"][te] = B.best_single(None, o[tr], None, len(te))
        if x is not None:
            out["supervised (logreg per action)"][te] = B.supervised(x[tr], o[tr], x[te], len(te))
    return out


def compare_crossfit(chosen, x, o, actions: Sequence[str], tasks: Sequence[str] | None = None,
                     router_name: str = GRPO, k: int = 5, seed: int = 0,
                     label: str = "cross-fitted") -> dict[str, dict[str, Any]]:
    """Like `compare` on one table, with the fitted baselines held out by K-fold cross-fitting."""
    o = np.asarray(o)
    n = len(o)
    results = {router_name: route_metrics(chosen, o, tasks)}
    for i, a in enumerate(actions):
        results[f"always {a}"] = route_metrics(np.full(n, i, np.int64), o, tasks)
    for name, ch in crossfit_choices(x, o, actions, k, seed).items():
        results[f"{name} ({label}, {max(2, min(k, n))}-fold)"] = route_metrics(ch, o, tasks)
    t = None if tasks is None else np.asarray(list(tasks))
    per = (lambda f: {str(v): f(o[t == v]) for v in sorted(set(t.tolist()))}) if t is not None else (lambda f: None)
    results[RANDOM] = _fixed_metrics(B.random_expected(o), n, per(B.random_expected))
    results[ORACLE] = _fixed_metrics(B.oracle_accuracy(o), n, per(B.oracle_accuracy))
    return results


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of a seeded K-fold split."""
    if k < 2 or k > n:
        raise ValueError(f"--cv K must be between 2 and the number of rows ({n}), got {k}")
    perm = np.random.RandomState(seed).permutation(n)
    folds = np.array_split(perm, k)
    return [(np.sort(np.concatenate([folds[j] for j in range(k) if j != i])), np.sort(folds[i])) for i in range(k)]


@dataclass
class CVResult:
    folds: list[dict[str, dict[str, Any]]]
    summary: dict[str, dict[str, Any]]   # method -> {accuracy_mean, accuracy_std, ...}
    k: int
    fraction: float


def summarise(folds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in folds[0]:
        acc = np.array([f[name]["accuracy"] for f in folds])
        row: dict[str, Any] = {"accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
                               "accuracy_folds": [float(a) for a in acc]}
        for key in ("tool_call_rate", "call_precision"):
            vals = [f[name][key] for f in folds if f[name].get(key) is not None]
            row[f"{key}_mean"] = float(np.mean(vals)) if vals else None
        if "per_task" in folds[0][name]:
            tasks = folds[0][name]["per_task"].keys()
            tasks = sorted({t for f in folds for t in f[name].get("per_task", {})})
            # a task absent from a fold (tiny tables) is left out of that fold's mean, not nan
            row["per_task_mean"] = {t: float(np.mean(v)) for t in tasks
                                    for v in [[f[name]["per_task"][t] for f in folds if t in f[name].get("per_task", {})]]}
        out[name] = row
    return out


def cross_validate(texts: Sequence[str], outcomes, actions: Sequence[str], opts: TrainOptions, k: int = 5,
                   seed: int = 0, fraction: float = 1.0, tasks: Sequence[str] | None = None,
                   features=None, on_fold: Callable[[int, int], None] | None = None) -> CVResult:
    """K-fold CV: per fold, GRPO (head or lora mode) on the training folds (optionally a seeded
    `fraction` of them, for data-efficiency curves) and every baseline, scored on the held-out fold."""
    from .grpo import head_probs, policy_probs, train_head, train_lora

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    o = np.asarray(outcomes)
    if features is None:
        from .encoders import get_encoder

        features = get_encoder(opts.encoder).features(texts, opts.max_length)
    x = np.asarray(features)
    t = None if tasks is None else np.asarray(list(tasks))
    results = []
    for i, (tr, te) in enumerate(kfold_indices(len(o), k, seed)):
        if fraction < 1:
            rng = np.random.RandomState(seed + 1000 + i)
            tr = np.sort(rng.choice(tr, max(2, int(round(fraction * len(tr)))), replace=False))
        if opts.mode == "head":
            probs = head_probs(x[te], train_head(x[tr], o[tr], opts).head)
        else:
            res = train_lora([texts[j] for j in tr], o[tr], actions, opts)
            probs = policy_probs(res.policy, [texts[j] for j in te], opts.max_length)
        results.append(compare(probs.argmax(1), x[tr], o[tr], x[te], o[te], actions,
                               None if t is None else t[te]))
        if on_fold:
            on_fold(i + 1, k)
    return CVResult(results, summarise(results), k, fraction)
