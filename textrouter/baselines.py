"""Baselines a GRPO router must beat, each as a function (train part, test part) -> chosen actions.

All work on outcome matrices [N, A] (int 0/1, column 0 = direct) and, for the supervised baseline,
frozen MiniLM embeddings [N, 384]. Registry: `BASELINES` / `available_baselines()`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def always(action: int) -> Callable[..., np.ndarray]:
    def choose(train_x, train_o, test_x, n_test: int) -> np.ndarray:
        return np.full(n_test, action, dtype=np.int64)
    return choose


def best_single(train_x, train_o, test_x, n_test: int) -> np.ndarray:
    """The action with the best accuracy on the training part (ties: the lower index, i.e. direct)."""
    return np.full(n_test, int(np.argmax(np.asarray(train_o).mean(0))), dtype=np.int64)


def random_expected(test_o) -> float:
    """Expected accuracy of a uniformly random action choice (exact, no sampling)."""
    return float(np.asarray(test_o, dtype=np.float64).mean())


def oracle_accuracy(test_o) -> float:
    """Accuracy when every question gets an action that answers it (if any does)."""
    return float(np.asarray(test_o).max(1).mean())


def _fit_logreg(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, float]:
    """L2 logistic regression (sklearn's objective: 0.5||w||^2 + C * sum log-loss), L-BFGS."""
    from scipy.optimize import minimize

    y = y.astype(np.float64)
    if y.min() == y.max():  # one class only: constant predictor
        return np.zeros(x.shape[1]), (20.0 if y[0] == 1 else -20.0)
    xd = x.astype(np.float64)

    def f(theta):
        w, b = theta[:-1], theta[-1]
        z = xd @ w + b
        # log(1 + exp(-s z)) computed stably
        loss = np.logaddexp(0, z) - y * z
        p = 1 / (1 + np.exp(-z))
        g = p - y
        grad = np.concatenate([c * xd.T @ g + w, [c * g.sum()]])
        return c * loss.sum() + 0.5 * w @ w, grad

    res = minimize(f, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:-1], float(res.x[-1])


def supervised_probs(train_x, train_o, test_x, c: float = 1.0) -> np.ndarray:
    """P(action a answers correctly) [N_test, A]: one logistic regression per action on embeddings."""
    train_o = np.asarray(train_o)
    cols = []
    for a in range(train_o.shape[1]):
        w, b = _fit_logreg(np.asarray(train_x), train_o[:, a], c)
        cols.append(1 / (1 + np.exp(-(np.asarray(test_x, dtype=np.float64) @ w + b))))
    return np.stack(cols, axis=1)


def supervised(train_x, train_o, test_x, n_test: int) -> np.ndarray:
    """What a user would build instead of GRPO: per-action correctness classifiers, pick the argmax."""
    return supervised_probs(train_x, train_o, test_x).argmax(1)


def available_baselines(actions: list[str]) -> dict[str, Callable[..., np.ndarray]]:
    """name -> chooser(train_x, train_o, test_x, n_test) for the baselines that pick actions."""
    reg: dict[str, Callable[..., Any]] = {f"always {a}": always(i) for i, a in enumerate(actions)}
    reg["best single"] = best_single
    reg["supervised (logreg per action)"] = supervised
    return reg
