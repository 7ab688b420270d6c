"""Category-structured routing: which action is right for a question's *kind*, as a linear head.

Benchmarks label their questions by kind (MMAU: 27 `sub_category` values such as "Rhythm and Tempo
Understanding"), and on ~400 training questions that label carries more routing signal than a
per-action classifier can find in the text alone (bench/ablation_category.py). The category
head uses it without needing it at routing time:

1. a multinomial logistic regression P(category | question embedding) (L2, C = 1, as sklearn's
   default), fitted on the table's rows;
2. per category c and action a, the action's accuracy on the rows of c, shrunk toward its
   accuracy over the whole table: (correct_ca + s acc_a) / (n_c + s), s = `shrink` rows;
3. the expected accuracy of each action for a question, q_a = sum_c P(c | question) est_ca,
   normalised over the actions: the router's probabilities. `fit_category_mixture` returns it as
   a mixture head (classifier W, b and the estimates M; textrouter.head), which every engine
   exports exactly (the static engine folds the classifier into its token table).
   `fit_category_head` distils q into one linear head instead (soft-target softmax regression,
   softmax(W x + b) ~ q): the form used until stop 21, 1.8 points lower on set C under nested CV.

`train --recipe auto` scores these heads instead of the GRPO heads (selection candidates
"category-s0", "category-s5", textrouter.selection) when the table has a category column
(`CATEGORY_FIELDS`, looked up in each row's metadata), and keeps the better by inner CV. Starting GRPO from this
head instead (as the initial policy and KL reference) lost most of its gain on set B in a nested-CV
probe, so the head is used as it is. numpy + scipy only.
"""
from __future__ import annotations

import numpy as np

from .errors import RouterError

CATEGORY_FIELDS = ("sub_category", "category")  # row metadata keys tried in this order
MIN_ROWS_PER_CATEGORY = 2.0  # mean rows per category below this: the labels say nothing, not used
CLASSIFIER_C = 1.0           # inverse L2 strength of the category classifier (sklearn's default)
DISTILL_L2 = 0.1             # L2 on the distilled head's weights (0.1 kept B's gain, 0.01 lost 0.7 pts)


def category_codes(table, field: str | None = None) -> tuple[np.ndarray, list[str], str] | None:
    """(codes [N] int64, category names, field) of a table's category labels, or None when the
    rows carry none (or too few rows per category to learn from). `field`: force one metadata key
    (RouterError if a row lacks it)."""
    rows = table.rows
    fields = (field,) if field else CATEGORY_FIELDS
    for f in fields:
        values = [(r.metadata or {}).get(f) for r in rows]
        if field is None and any(v in (None, "") for v in values):
            continue
        if field is not None:
            missing = [r.id for r, v in zip(rows, values) if v in (None, "")]
            if missing:
                raise RouterError(f"{len(missing)} of {len(rows)} rows have no {field!r} (first: {missing[0]}); "
                                  f"give every row a {field!r} value or drop --category-field")
        names = sorted({str(v) for v in values})
        if len(names) < 2 or len(rows) / len(names) < MIN_ROWS_PER_CATEGORY:
            return None
        return np.array([names.index(str(v)) for v in values], dtype=np.int64), names, f
    return None


def category_estimates(codes: np.ndarray, outcomes, n_cats: int, shrink: float) -> np.ndarray:
    """[n_cats, A] accuracy of each action per category, shrunk toward its accuracy on all rows."""
    o = np.asarray(outcomes, dtype=np.float64)
    overall = o.mean(0)
    est = np.tile(overall, (n_cats, 1))
    for c in range(n_cats):
        rows = codes == c
        if rows.any():
            est[c] = (o[rows].sum(0) + shrink * overall) / (rows.sum() + shrink)
    return est


def _softmax_regression(x: np.ndarray, targets: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """(W [K, D], b [K]) minimising sum_i CE(targets_i, softmax(W x_i + b)) + l2/2 ||W||^2 (L-BFGS);
    `targets` [N, K] rows sum to 1 (one-hot = multinomial logistic regression)."""
    from scipy.optimize import minimize

    n, d = x.shape
    k = targets.shape[1]

    def f(theta):
        w, b = theta[:k * d].reshape(k, d), theta[k * d:]
        z = x @ w.T + b
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        g = np.exp(logp) - targets
        loss = -(targets * logp).sum() + 0.5 * l2 * (w * w).sum()
        return loss, np.concatenate([(g.T @ x + l2 * w).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return res.x[:k * d].reshape(k, d), res.x[k * d:]


def category_classifier(x, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W [K, D], b [K], present [K]): the multinomial logistic regression P(category | embedding)
    over the K categories present in `codes` (step 1); `present` holds their codes."""
    present = np.unique(codes)
    onehot = (codes[:, None] == present[None, :]).astype(np.float64)
    w, b = _softmax_regression(np.asarray(x, dtype=np.float64), onehot, 1.0 / CLASSIFIER_C)
    return w, b, present


def category_probs(x, codes: np.ndarray, n_cats: int, x_new) -> np.ndarray:
    """P(category | embedding) [N_new, n_cats] from a classifier fitted on (x, codes)."""
    w, b, present = category_classifier(x, codes)
    z = np.asarray(x_new, dtype=np.float64) @ w.T + b
    z = np.exp(z - z.max(1, keepdims=True))
    out = np.zeros((len(z), n_cats))
    out[:, present] = z / z.sum(1, keepdims=True)
    return out


def expected_accuracy(x, codes: np.ndarray, outcomes, n_cats: int, shrink: float, x_new=None) -> np.ndarray:
    """[N_new, A] sum_c P(c | question) est_ca (x_new: the rows to score; default x itself)."""
    est = category_estimates(codes, outcomes, n_cats, shrink)
    return category_probs(x, codes, n_cats, x if x_new is None else x_new) @ est


def fit_category_mixture(x, codes: np.ndarray, outcomes, shrink: float,
                         n_cats: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W [K, D], b [K], M [K, A]) float32: the category router as a mixture head (textrouter.head):
    the classifier of step 1 over the K categories present in `codes` and their shrunk accuracy
    estimates (step 2), floored at head.MIN_MIX. Its probabilities are the normalised expected
    accuracies q of step 3 exactly (no distillation)."""
    from .head import MIN_MIX

    n_cats = int(codes.max()) + 1 if n_cats is None else n_cats
    w, b, present = category_classifier(x, codes)
    est = category_estimates(codes, outcomes, n_cats, shrink)[present]
    return w.astype(np.float32), b.astype(np.float32), np.maximum(est, MIN_MIX).astype(np.float32)


def fit_category_head(x, codes: np.ndarray, outcomes, shrink: float,
                      n_cats: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W [A, D], b [A]) float32: the linear head distilled from the expected accuracies (step 3;
    candidate head "linear": measured, not the default, fit_category_mixture is)."""
    n_cats = int(codes.max()) + 1 if n_cats is None else n_cats
    q = expected_accuracy(x, codes, outcomes, n_cats, shrink)
    q = np.clip(q, 1e-6, None)
    q = q / q.sum(1, keepdims=True)
    w, b = _softmax_regression(np.asarray(x, dtype=np.float64), q, DISTILL_L2)
    return w.astype(np.float32), b.astype(np.float32)

