"""Evaluation maths and baselines on hand-made outcome matrices (numbers checked by hand)."""
from __future__ import annotations

import numpy as np
import pytest

from textrouter import baselines as B
from textrouter.evaluate import ORACLE, RANDOM, compare, kfold_indices, route_metrics, summarise

# columns: direct, asr. rows: tool helps, tool hurts, both right, both wrong
O = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
TASKS = ["speech", "sound", "music", "speech"]


def test_route_metrics_by_hand():
    m = route_metrics([1, 1, 0, 1], O, TASKS)
    assert m["accuracy"] == pytest.approx(2 / 4)          # right on rows 0 and 2
    assert m["tool_call_rate"] == pytest.approx(3 / 4)
    assert m["call_precision"] == pytest.approx(1 / 3)    # only row 0's call changed the answer for the better
    assert m["per_task"] == {"music": 1.0, "sound": 0.0, "speech": 0.5}
    assert route_metrics([0, 0, 0, 0], O)["call_precision"] is None


def test_fixed_baselines():
    assert B.oracle_accuracy(O) == pytest.approx(3 / 4)
    assert B.random_expected(O) == pytest.approx(4 / 8)
    train_o = np.array([[0, 1], [0, 1], [1, 1]])
    assert B.best_single(None, train_o, None, 2).tolist() == [1, 1]
    assert B.best_single(None, np.array([[1, 1]]), None, 1).tolist() == [0]  # ties go to direct


def test_supervised_baseline_learns_a_separable_rule():
    rng = np.random.RandomState(0)
    x = rng.randn(300, 8)
    helps = x[:, 0] > 0
    o = np.stack([(~helps).astype(int), helps.astype(int)], 1)
    chosen = B.supervised(x[:200], o[:200], x[200:], 100)
    assert (chosen == helps[200:].astype(int)).mean() > 0.9


def test_compare_lists_every_method():
    x = np.random.RandomState(1).randn(4, 8)
    res = compare([1, 0, 0, 0], x, O, x, O, ["direct", "asr"], TASKS)
    assert set(res) == {"GRPO router", "always direct", "always asr", "best single",
                        "supervised (logreg per action)", RANDOM, ORACLE}
    assert res["GRPO router"]["accuracy"] == 0.75 == res[ORACLE]["accuracy"]  # row 3: nothing is right
    assert res["always direct"]["accuracy"] == 0.5


def test_kfold_partitions_and_summary():
    folds = kfold_indices(23, 5, seed=0)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(23))
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == 23
    with pytest.raises(ValueError, match="between 2"):
        kfold_indices(3, 5)
    s = summarise([{"m": {"accuracy": 0.5, "tool_call_rate": 0.1, "call_precision": None}},
                   {"m": {"accuracy": 0.7, "tool_call_rate": 0.3, "call_precision": 0.5}}])
    assert s["m"]["accuracy_mean"] == pytest.approx(0.6) and s["m"]["accuracy_std"] == pytest.approx(0.1)
    assert s["m"]["call_precision_mean"] == 0.5
