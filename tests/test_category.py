"""Category heads (textrouter.category) and their place in `train`'s selection (issue 8)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from textrouter import category as K
from textrouter.errors import RouterError
from textrouter.table import BUNDLED_TABLE, load_table

runner = CliRunner()
MAP = ["--direct", "qwen2_audio_direct", "--tool", "asr=whisper_asr_then_gpt4o"]


def _table(tmp_path, rows, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def _clustered(n: int, k: int, seed: int, d: int = 16):
    """(rng, codes [n] = i mod k, embeddings [n, d] float32 clustered by code, centres 2 sd apart)."""
    rng = np.random.default_rng(seed)
    codes = np.arange(n) % k
    centres = rng.normal(size=(k, d)) * 2.0
    return rng, codes, (centres[codes] + rng.normal(size=(n, d))).astype(np.float32)


def test_bundled_table_categories_are_found():
    codes, names, field = K.category_codes(load_table(BUNDLED_TABLE))
    assert field == "sub_category" and len(names) == 27 and codes.shape == (499,)
    assert "Rhythm and Tempo Understanding" in names and set(np.unique(codes)) == set(range(27))


def test_a_table_without_categories_gives_none_and_a_forced_field_names_the_missing_row(tmp_path):
    rows = [{"id": f"q{i}", "question": f"question {i}?", "choices": ["a", "b"], "answer": "a",
             "outcomes": {"d": i % 2, "t": 1 - i % 2}} for i in range(12)]
    table = load_table(_table(tmp_path, rows))
    assert K.category_codes(table) is None
    with pytest.raises(RouterError, match="12 of 12 rows have no 'kind' \\(first: q0\\)"):
        K.category_codes(table, "kind")
    one_per_row = [{**r, "category": f"c{i}"} for i, r in enumerate(rows)]  # 1 row per category: no signal
    assert K.category_codes(load_table(_table(tmp_path, one_per_row, "u.jsonl"))) is None


def test_category_head_routes_unseen_questions_of_a_category_to_its_best_action():
    """Two categories, embeddings clustered by category: action 1 is right on category 0 only,
    action 0 on category 1. The distilled linear head must route held-out questions by cluster
    (a head that ignored the categories would pick one action for all)."""
    rng, codes, x = _clustered(n := 200, 2, seed=0)
    o = np.zeros((n, 2), np.int8)
    o[codes == 0, 1] = 1                                 # tool right, direct wrong
    o[codes == 1, 0] = rng.random((codes == 1).sum()) < 0.7  # direct right 70 %, tool never
    tr, te = np.arange(150), np.arange(150, n)
    w, b = K.fit_category_head(x[tr], codes[tr], o[tr], shrink=5.0, n_cats=2)
    chosen = (x[te] @ w.T + b).argmax(1)
    assert (chosen == np.where(codes[te] == 0, 1, 0)).mean() >= 0.95
    est = K.category_estimates(codes[tr], o[tr], 2, shrink=5.0)
    assert est[0, 1] > 0.9 and est[1, 1] < 0.1  # shrinkage keeps the estimates near the data at n_c=75


def test_shrinkage_pulls_a_small_category_toward_the_table_wide_accuracy():
    codes = np.array([0] * 50 + [1] * 2)
    o = np.zeros((52, 2), np.int8)
    o[:50, 0] = 1        # direct right on category 0
    o[50:, 1] = 1        # the tool right on both rows of category 1
    raw = K.category_estimates(codes, o, 2, shrink=0.0)
    shrunk = K.category_estimates(codes, o, 2, shrink=20.0)
    assert raw[1].tolist() == [0.0, 1.0]
    assert shrunk[1, 0] > shrunk[1, 1]  # 2 rows against 20 of prior: direct still looks better there


def test_selection_skips_category_candidates_without_codes_and_validates_kinds():
    from textrouter.selection import Candidate, get_candidates, usable

    auto = get_candidates("auto")
    assert {c.kind for c in auto} == {"grpo", "category"}
    assert all(c.kind == "grpo" for c in usable(auto, None))
    with pytest.raises(ValueError, match="valid: grpo, category"):
        Candidate("x", kind="lookup")
    with pytest.raises(ValueError, match="valid: mixture, linear"):
        Candidate("x", kind="category", head="tree")
    with pytest.raises(ValueError, match="shrink must be >= 0"):
        Candidate("x", kind="category", shrink=-1)


def test_train_records_the_category_field_and_no_categories_turns_them_off(tmp_path):
    rows = [json.loads(line) for line in BUNDLED_TABLE.read_text(encoding="utf-8").splitlines()[:150]]
    table = _table(tmp_path, rows)
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "a"), "--json", *MAP])
    assert res.exit_code == 0, res.stderr
    sel = json.loads(res.stdout)["selection"]
    assert sel["category_field"] == "sub_category" and sel["categories"] == len({r["sub_category"] for r in rows})
    assert {"category-s0", "category-s5"} <= set(sel["scores"])
    if sel["chosen"]["kind"] == "category":  # no GRPO ran: no reward curve is left behind
        assert not (tmp_path / "a" / "reward_curve.png").exists()
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "b"), "--json", "--no-categories", *MAP])
    assert res.exit_code == 0, res.stderr
    sel = json.loads(res.stdout)["selection"]
    assert sel["category_field"] is None and not any(k.startswith("category") for k in sel["scores"])
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "b2"), "--json", "--no-categories",
                              "--fit-margin", *MAP])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["decision"]["fit"]["source"].startswith("4-fold inner CV")
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "c"), "--category-field", "task",
                              "--no-categories", *MAP])
    assert res.exit_code == 2 and res.stderr.strip() == ("error: --category-field contradicts --no-categories; "
                                                         "drop one of them")


def test_a_category_router_exports_and_routes_like_its_checkpoint(tmp_path):
    """The chosen category head is a mixture head (textrouter.head) on the MiniLM engine: the ONNX
    router gives the torch policy's action on the check questions (export's agreement check) and
    routes a question; meta and router.json name the head's categories."""
    rows = [json.loads(line) for line in BUNDLED_TABLE.read_text(encoding="utf-8").splitlines()[:150]]
    table = _table(tmp_path, rows)
    # force the category head: --category-field keeps the selection, a one-kind candidate set is
    # not a CLI option, so train through the library with the category candidates only
    from textrouter.model import save_checkpoint
    from textrouter.selection import get_candidates
    from textrouter.table import ActionMapping
    from textrouter.training import Plan, fit_router, plan

    base = plan()
    cats_only = tuple(c for c in get_candidates("auto") if c.kind == "category")
    p = Plan("auto", base.options, cats_only, {}, 1.0)
    mapping = ActionMapping("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o"})
    loaded = load_table(table, mapping)
    policy, res, meta = fit_router(loaded, mapping, p, table.name)
    assert meta["selection"]["chosen"]["kind"] == "category" and res.curve == []
    assert meta["metrics"]["final_mean_reward"] is None and meta["metrics"]["steps"] == 0
    assert meta["head"]["kind"] == "mixture" and meta["head"]["category_field"] == "sub_category"
    assert len(meta["head"]["categories"]) == policy.head.mix.shape[0] == len({r["sub_category"] for r in rows})
    save_checkpoint(policy, tmp_path / "ck", meta)
    out = runner.invoke(app, ["export", str(tmp_path / "ck"), "--out", str(tmp_path / "r"), "--json"])
    assert out.exit_code == 0, out.stderr
    import textrouter

    r = textrouter.load_router(tmp_path / "r")
    got = r.route("What is the tempo of this piece in beats per minute?", ["60", "90", "120", "150"])
    assert got["action"] in ("direct", "asr") and abs(sum(got["probs"].values()) - 1.0) < 1e-4


def test_select_routes_by_argmax_unless_a_margin_is_asked_for():
    """Stop 21: without a budget or costs `select` keeps margin 0 (a fitted margin lost points
    under nested CV); fit_margin=True or a budget fits it on the out-of-fold probabilities."""
    from textrouter.grpo import TrainOptions
    from textrouter.selection import get_candidates, select

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    o = (rng.random((120, 2)) < 0.5).astype(np.int8)
    base = TrainOptions(mode="head")
    plain = select(x, o, ["direct", "asr"], base, get_candidates("grpo")).rule
    assert plain.margin == 0.0
    fitted = select(x, o, ["direct", "asr"], base, get_candidates("grpo"), fit_margin=True).rule
    # the fit chooses among the grid (0 included) by out-of-fold accuracy: never below margin 0's
    # (measured here: margin 0.2)
    assert fitted.fit["accuracy"] >= plain.fit["accuracy"]
    assert any(abs(m - fitted.margin) < 1e-12 for m, _, _ in fitted.curve)
    budget = select(x, o, ["direct", "asr"], base, get_candidates("grpo"), max_tool_rate=0.1).rule
    assert budget.fit["tool_rate"] <= 0.1 + 1e-9


def test_the_mixture_head_is_the_category_router_exactly():
    """fit_category_mixture's probabilities are the normalised expected accuracies
    sum_c P(c | x) est_ca (no distillation), and they route held-out questions by cluster."""
    from textrouter.head import head_probs

    rng, codes, x = _clustered(n := 240, 3, seed=1)
    o = np.zeros((n, 3), np.int8)
    for c in range(3):                                   # action c is right on category c only
        o[codes == c, c] = rng.random((codes == c).sum()) < 0.8
    tr, te = np.arange(180), np.arange(180, n)
    head = K.fit_category_mixture(x[tr], codes[tr], o[tr], shrink=5.0, n_cats=3)
    assert [a.shape for a in head] == [(3, 16), (3,), (3, 3)]
    q = K.expected_accuracy(x[tr], codes[tr], o[tr], 3, 5.0, x[te])
    p = head_probs(x[te], head)
    np.testing.assert_allclose(p, q / q.sum(1, keepdims=True), atol=1e-5)
    assert (p.argmax(1) == codes[te]).mean() >= 0.95


def test_a_category_absent_from_the_training_rows_is_left_out_of_the_mixture():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    codes = np.where(np.arange(40) < 20, 0, 2)         # code 1 never occurs
    o = (rng.random((40, 2)) < 0.5).astype(np.int8)
    w, b, m = K.fit_category_mixture(x, codes, o, shrink=0.0, n_cats=3)
    assert w.shape[0] == b.shape[0] == m.shape[0] == 2
    assert np.all(m > 0) and np.isfinite(np.log(m)).all()  # an action never right in a category: floored


def test_a_mixture_router_of_the_static_engine_exports_with_its_probabilities(tmp_path):
    """Static engine, mixture head: checkpoint round trip and ONNX export keep the numpy head's
    probabilities on real questions (the classifier folded into the token table, softmax and the
    estimates after the mean), and router.json says which head it is."""
    import textrouter
    from textrouter.checkpoint import load_checkpoint
    from textrouter.encoders import get_encoder
    from textrouter.head import head_probs
    from textrouter.model import save_checkpoint
    from textrouter.table import ActionMapping, outcome_matrix, texts

    mapping = ActionMapping("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o",
                                                    "caption": "qwen2_caption_then_gpt4o"})
    table = load_table(BUNDLED_TABLE, mapping)
    codes, names, field = K.category_codes(table)
    spec = get_encoder("minilm-static")
    xs = texts(table)
    x = spec.features(xs, 128)
    o = outcome_matrix(table, mapping)
    head = K.fit_category_mixture(x, codes, o, shrink=5.0)
    policy = spec.policy_from_head(mapping.actions, head)
    meta = {"actions": mapping.actions, "direct_action": "direct", "engine": "minilm-static", "max_length": 128,
            "head": {"kind": "mixture", "category_field": field, "categories": names}}
    save_checkpoint(policy, tmp_path / "ck", meta)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert loaded.head.mix.shape == (27, 3)
    out = runner.invoke(app, ["export", str(tmp_path / "ck"), "--out", str(tmp_path / "r"), "--json"])
    assert out.exit_code == 0, out.stderr
    assert json.loads((tmp_path / "r" / "router.json").read_text())["head"]["kind"] == "mixture"
    rows = table.rows[:40]
    want = head_probs(x[:40], head)
    for precision, atol, agree in (("fp32", 1e-4, 1.0), ("int8", 1e-2, 0.95)):
        router = textrouter.load_router(tmp_path / "r", precision=precision)
        got = router.route_batch([{"question": r.question, "choices": r.choices} for r in rows])
        probs = np.array([[g["probs"][a] for a in mapping.actions] for g in got])
        np.testing.assert_allclose(probs, want, atol=atol, err_msg=precision)
        assert (probs.argmax(1) == want.argmax(1)).mean() >= agree, precision
    # the static engine is batch-invariant (the runtime batches it): P(category) @ M stays fp32 at
    # quantisation, a per-batch activation scale there moved int8 probabilities by up to 0.007
    single = [router.route(r.question, r.choices)["probs"] for r in rows]
    assert router.batch_invariant
    assert max(abs(g["probs"][a] - s[a]) for g, s in zip(got, single) for a in mapping.actions) < 1e-5
    _old_int8_export_routes_one_question_per_call(tmp_path / "r", rows)


def _old_int8_export_routes_one_question_per_call(folder, rows):
    """A static mixture router exported before P @ M was kept fp32 (its int8 graph quantises that
    MatMul, router.json says fp32_nodes "none"): the runtime must not batch it."""
    import logging

    import textrouter
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from textrouter.folder import sha256_file

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                     extra_options={"DefaultTensorType": 1})
    doc = json.loads((folder / "router.json").read_text())
    doc["metrics"]["quantization"]["fp32_nodes"] = "none"
    doc["files"]["model.int8.onnx"] = sha256_file(folder / "model.int8.onnx")
    (folder / "router.json").write_text(json.dumps(doc))
    old = textrouter.load_router(folder, precision="int8")
    assert not old.batch_invariant
    items = [{"question": r.question, "choices": r.choices} for r in rows]
    got = old.route_batch(items, batch_size=32)
    single = [old.route(r.question, r.choices)["probs"] for r in rows]
    assert max(abs(g["probs"][a] - s[a]) for g, s in zip(got, single) for a in old.actions) < 1e-5
