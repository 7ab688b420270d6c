"""The decision rule / tool budget (textrouter.decision) and its use by the torch-free runtime."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from textrouter.decision import DecisionRule, argmax_rule, fit_rule, margin_curve, parse_costs
from textrouter.errors import RouterLoadError


def _probs(n, a, seed=0):
    z = np.random.RandomState(seed).randn(n, a) * 2
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_margin_zero_is_the_argmax_and_margins_are_monotone():
    p = _probs(500, 4)
    rule = argmax_rule(["direct", "asr", "caption", "x"])
    assert np.array_equal(rule.choose(p), p.argmax(1))
    rates = [float((rule.choose(p, margin=m) != 0).mean()) for m in (-0.5, -0.1, 0.0, 0.1, 0.3, 0.6, 1.0)]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    assert rates[-1] == 0.0  # margin 1: p_tool - p_direct can never exceed 1


def test_cost_scales_the_bar_of_one_tool():
    p = _probs(400, 3, seed=1)
    plain = DecisionRule(tools=("asr", "caption"))
    dear = DecisionRule(tools=("asr", "caption"), costs={"asr": 2.0})
    # asr must now gain 2 x margin: fewer asr calls, never more
    for m in (0.05, 0.1, 0.2):
        a_plain = (plain.choose(p, margin=m) == 1).sum()
        a_dear = (dear.choose(p, margin=m) == 1).sum()
        assert a_dear < a_plain
    # the budget is cost-weighted: one asr call costs 2
    assert dear.tool_rate(np.array([0, 1, 2, 0])) == pytest.approx((2 + 1) / 4)


def test_fit_rule_finds_the_margin_that_the_data_rewards_and_respects_the_budget():
    # a tool that is right only when the router is confident (gain > 0.3, a grid point): margin 0.3
    rng = np.random.RandomState(3)
    gain = rng.uniform(-0.6, 0.9, 2000)
    p_tool = (1 + gain) / 2
    p = np.stack([1 - p_tool, p_tool], 1)
    o = np.zeros((2000, 2), int)
    o[:, 0] = 1
    o[gain > 0.3, 0], o[gain > 0.3, 1] = 0, 1
    rule = fit_rule(p, o, ["direct", "asr"])
    assert rule.margin == pytest.approx(0.3)
    assert rule.fit["accuracy"] == pytest.approx(1.0)
    argmax_acc = o[np.arange(2000), p.argmax(1)].mean()
    assert rule.fit["accuracy"] > argmax_acc + 0.1
    capped = fit_rule(p, o, ["direct", "asr"], max_tool_rate=0.1)
    assert capped.fit["tool_rate"] <= 0.1 + 1e-9
    assert (capped.choose(p) != 0).mean() <= 0.1 + 1e-9
    # the stored curve turns a route-time budget into a margin without the table
    m = rule.margin_for_rate(0.1)
    assert (rule.choose(p, margin=m) != 0).mean() <= 0.1 + 0.01


def test_curve_is_sorted_and_covers_both_ends():
    p = _probs(300, 3, seed=2)
    o = np.random.RandomState(2).randint(0, 2, (300, 3))
    curve = margin_curve(argmax_rule(["direct", "a", "b"]), p, o)
    margins = [c[0] for c in curve]
    assert margins == sorted(margins) and margins[0] == -1.0 and margins[-1] == 1.0
    assert curve[-1][1] == 0.0 and curve[-1][2] == pytest.approx(o[:, 0].mean())


@pytest.mark.parametrize("doc, fragment", [
    ({"rule": "threshold-v0"}, "unknown"),
    ({"rule": "gain-margin-v1", "margin": float("nan")}, "finite"),
    ({"rule": "gain-margin-v1", "margin": 3}, "out of range"),
    ({"rule": "gain-margin-v1", "margin": 0.1, "costs": {"chords": 2}}, "not a tool"),
    ({"rule": "gain-margin-v1", "margin": 0.1, "costs": {"asr": 0}}, "> 0"),
    ({"rule": "gain-margin-v1", "margin": 0.1, "max_tool_rate": 1.5}, "out of range"),
    ({"rule": "gain-margin-v1", "margin": 0.1, "curve": [[0, 1]]}, "curve"),
])
def test_from_dict_rejects_malformed_rules(doc, fragment):
    with pytest.raises(ValueError, match=fragment):
        DecisionRule.from_dict(doc, ["direct", "asr"])


@pytest.mark.parametrize("specs, fragment", [
    (["asr"], "TOOL=COST"), (["chords=2"], "not a tool action"), (["asr=0"], "> 0"),
    (["asr=nan"], "finite"), (["asr=1", "asr=2"], "twice"), (["asr=x"], "number"),
])
def test_parse_costs_errors(specs, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_costs(specs, ["asr"])
    assert parse_costs(["asr=2.5"], ["asr", "caption"]) == {"asr": 2.5, "caption": 1.0}


def _router_copy(tmp_path, decision):
    from textrouter.runtime import BUNDLED_ROUTERS

    d = tmp_path / "r"
    shutil.copytree(BUNDLED_ROUTERS["default"], d)
    doc = json.loads((d / "router.json").read_text())
    if decision is None:
        doc.pop("decision", None)
    else:
        doc["decision"] = decision
    (d / "router.json").write_text(json.dumps(doc))  # files{} hashes cover the model and tokenizer only
    return d


QUESTIONS = [{"question": q, "choices": c} for q, c in [
    ("What does the speaker say about the weather?", ["sunny", "rain"]),
    ("What city does the second speaker come from?", ["Boston", "Chicago"]),
    ("Which instrument plays the melody?", ["piano", "violin"]),
    ("What is the tempo of the song?", ["slow", "fast"]),
    ("How many times does the dog bark?", ["one", "three"]),
    ("What word does the woman repeat?", ["hello", "thanks"]),
]]


def test_runtime_applies_the_stored_margin_and_route_time_overrides(tmp_path):
    from textrouter.runtime import load_router

    curve = [[-1.0, 1.0, 0.5], [0.0, 0.4, 0.6], [0.2, 0.1, 0.58], [1.0, 0.0, 0.55]]
    d = _router_copy(tmp_path, {"rule": "gain-margin-v1", "margin": 0.2, "max_tool_rate": 1.0,
                                "costs": {"asr": 1.0}, "curve": curve, "fit": {}})
    r = load_router(d)
    out = r.route_batch(QUESTIONS)
    for x in out:  # the stored margin: asr only when p(asr) - p(direct) > 0.2
        gain = x["probs"]["asr"] - x["probs"]["direct"]
        assert x["action"] == ("asr" if gain > 0.2 else "direct")
    assert [x["action"] for x in r.route_batch(QUESTIONS, margin=-1.0)] == ["asr"] * len(QUESTIONS)
    assert [x["action"] for x in r.route_batch(QUESTIONS, margin=1.0)] == ["direct"] * len(QUESTIONS)
    one = r.route(QUESTIONS[0]["question"], QUESTIONS[0]["choices"], margin=1.0)
    assert one["action"] == "direct"
    # a budget of 10% maps to margin 0.2 on the stored curve, 0% to margin 1 (never call)
    assert r.decision.margin_for_rate(0.1) == 0.2
    assert [x["action"] for x in load_router(d, max_tool_rate=0.0).route_batch(QUESTIONS)] == ["direct"] * 6
    with pytest.raises(ValueError, match="out of range"):
        load_router(d, margin=5)


def test_folder_without_decision_routes_by_argmax_and_a_bad_one_is_refused(tmp_path):
    from textrouter.runtime import load_router

    r = load_router(_router_copy(tmp_path / "a", None))
    for x in r.route_batch(QUESTIONS):
        assert x["action"] == max(x["probs"], key=x["probs"].get)
    with pytest.raises(ValueError, match="no fitted margin curve"):
        r.route("What is said?", None, max_tool_rate=0.2)
    bad = _router_copy(tmp_path / "b", {"rule": "gain-margin-v1", "margin": "high"})
    with pytest.raises(RouterLoadError, match="decision margin must be a number"):
        load_router(bad)


def test_route_cli_margin_override(tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    from cli.main import app

    clip = sorted((Path(__file__).resolve().parent.parent / "examples" / "audio").glob("*.wav"))[0]
    runner = CliRunner()
    q = "What does the speaker say?"
    got = {}
    for m in ("-1", "1"):
        res = runner.invoke(app, ["route", q, "--audio", str(clip), "--margin", m, "--json"])
        assert res.exit_code == 0, res.stderr
        got[m] = json.loads(res.stdout)["routing"]["action"]
    assert got == {"-1": "asr", "1": "direct"}  # same probabilities, the margin decides
    res = runner.invoke(app, ["route", q, "--audio", str(clip), "--margin", "5"])
    assert res.exit_code == 2 and res.stderr.strip().startswith("error: margin 5") and len(res.stderr.strip().splitlines()) == 1
