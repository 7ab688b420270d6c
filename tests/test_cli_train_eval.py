"""`audiorouter train` / `audiorouter eval` end to end on slices of the real outcome table, with the
real MiniLM-L6 encoder (head mode: fast; one slow test trains LoRA mode)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from textrouter.table import BUNDLED_TABLE

runner = CliRunner()
MAP = ["--direct", "qwen2_audio_direct", "--tool", "asr=whisper_asr_then_gpt4o"]


def slice_table(tmp_path, n, name="t.jsonl", edit=None):
    rows = [json.loads(line) for line in BUNDLED_TABLE.read_text(encoding="utf-8").splitlines()[:n]]
    if edit:
        edit(rows)
    p = tmp_path / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def probs_of(ckpt, texts):
    from textrouter.grpo import policy_probs
    from textrouter.checkpoint import load_checkpoint

    policy, meta = load_checkpoint(ckpt)
    return policy_probs(policy, texts, meta["max_length"]), meta


def test_train_head_mode_is_deterministic_and_loads(tmp_path):
    def edit(rows):  # a very long question (truncated at 128 tokens) and a non-ASCII one
        rows[0]["question"] = "Which sound is heard " * 300 + "?"
        rows[1]["question"] = "这段音频里是什么乐器？ Quel instrument ?"

    table = slice_table(tmp_path, 48, edit=edit)
    outs = []
    for name in ("a", "b"):
        res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / name), "--mode", "head",
                                  "--epochs", "5", "--seed", "7", "--json", *MAP])
        assert res.exit_code == 0, res.stderr
        outs.append(json.loads(res.stdout))
    meta = outs[0]
    assert meta["actions"] == ["direct", "asr"] and meta["column_mapping"]["asr"] == "whisper_asr_then_gpt4o"
    assert meta["metrics"]["truncated_questions"] == 1 and meta["metrics"]["steps"] == 10
    assert meta["table"]["n_rows"] == 48 and len(meta["table"]["sha256"]) == 64
    for f in ("model.safetensors", "tokenizer.json", "meta.json", "reward_curve.png", "curve.json"):
        assert (tmp_path / "a" / f).is_file()
    from textrouter.table import load_table, texts

    xs = texts(load_table(table))
    from safetensors.numpy import load_file

    ha, hb = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("a", "b"))
    assert np.array_equal(ha["head.weight"], hb["head.weight"])  # same seed => identical router
    assert np.array_equal(ha["encoder.embeddings.word_embeddings.weight"], hb["encoder.embeddings.word_embeddings.weight"])
    pa, _ = probs_of(tmp_path / "a", xs)
    assert pa.shape == (48, 2) and np.allclose(pa.sum(1), 1, atol=1e-5)
    # the saved full policy reproduces the in-sample routed accuracy the trainer reported
    from textrouter.table import ActionMapping, outcome_matrix

    o = outcome_matrix(load_table(table), ActionMapping("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o"}))
    from textrouter.decision import DecisionRule

    rule = DecisionRule.from_dict(meta["decision"], meta["actions"])  # fitted by inner CV (48 rows)
    acc = o[np.arange(48), rule.choose(pa)].mean()
    assert acc == pytest.approx(meta["metrics"]["train_routed_accuracy"], abs=1 / 48)
    assert meta["selection"]["chosen"]["epochs"] == 5 and meta["selection"]["inner_k"] == 4


def test_eval_cv_json_and_plot(tmp_path):
    table = slice_table(tmp_path, 60)
    plot = tmp_path / "cv.png"
    res = runner.invoke(app, ["eval", str(table), "--cv", "3", "--epochs", "3", "--fractions", "0.5,1",
                              "--json", "--plot", str(plot), *MAP])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [r["fraction"] for r in doc["runs"]] == [0.5, 1.0]
    s = doc["runs"][-1]["summary"]
    assert {"GRPO router", "always direct", "always asr", "best single", "supervised (logreg per action)",
            "random (expected)", "oracle"} <= set(s)
    assert all(s["oracle"]["accuracy_mean"] >= v["accuracy_mean"] - 1e-9 for v in s.values())
    assert len(s["GRPO router"]["accuracy_folds"]) == 3
    assert plot.stat().st_size > 1000 and (tmp_path / "cv-efficiency.png").stat().st_size > 1000


@pytest.mark.parametrize("args, edit, fragment", [
    (["--direct", "qwen2_audio_direct", "--tool", "asr=nope"], None, "unknown outcome column 'nope'"),
    (["--direct", "qwen2_audio_direct", "--tool", "asr"], None, "NAME=COLUMN"),
    (MAP, lambda rows: rows[3]["outcomes"].update(qwen2_audio_direct=0.5), ":4: outcome 'qwen2_audio_direct' is 0.5"),
    (MAP, lambda rows: rows[2].update(question=""), ":3: missing or empty 'question'"),
    (MAP, lambda rows: rows[5]["outcomes"].pop("whisper_asr_then_gpt4o"), ":6: missing outcome for mapped column"),
    (MAP + ["--reward", "accuracy"], None, "valid: relative, aligned, absolute"),
    (MAP + ["--mode", "full"], None, "valid: head, lora"),
])
def test_train_bad_input_is_one_line(tmp_path, args, edit, fragment):
    table = slice_table(tmp_path, 8, edit=edit)
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_eval_and_train_usage_errors(tmp_path):
    res = runner.invoke(app, ["train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not found" in res.stderr
    table = slice_table(tmp_path, 8)
    res = runner.invoke(app, ["eval", str(table)])
    assert res.exit_code == 2 and "--router DIR" in res.stderr and "--cv K" in res.stderr
    res = runner.invoke(app, ["eval", str(table), "--cv", "20", *MAP])
    assert res.exit_code == 2 and "between 2" in res.stderr
    res = runner.invoke(app, ["eval", str(table), "--router", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")


@pytest.mark.slow
def test_train_lora_mode_small(tmp_path):
    """The paper's recipe (LoRA r16 + head) for a few steps on 32 real questions; the checkpoint
    (merged LoRA) reproduces the training policy's probabilities and is deterministic per seed."""
    table = slice_table(tmp_path, 32)
    res = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "l"), "--mode", "lora",
                              "--batch-size", "16", "--seed", "1", "--json", *MAP])
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["mode"] == "lora" and meta["epochs"] == 1 and meta["metrics"]["steps"] == 2
    assert meta["options"]["lora"]["r"] == 16 and meta["options"]["lora"]["alpha"] == 32
    from textrouter.grpo import RewardConfig, TrainOptions, policy_probs, train_lora
    from textrouter.table import ActionMapping, load_table, outcome_matrix, texts

    t = load_table(table)
    xs = texts(t)
    o = outcome_matrix(t, ActionMapping("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o"}))
    # `--mode lora` alone is the paper's recipe: relative reward (textrouter.training.RECIPES)
    assert meta["options"]["reward"]["kind"] == "relative"
    again = train_lora(xs, o, ["direct", "asr"], TrainOptions(mode="lora", batch_size=16, seed=1,
                                                                reward=RewardConfig(kind="relative")))
    p_saved, _ = probs_of(tmp_path / "l", xs)
    np.testing.assert_allclose(policy_probs(again.policy, xs), p_saved, atol=1e-5)
    # LoRA training moved the policy away from the initial (near-uniform) one
    assert np.abs(p_saved - 0.5).max() > 1e-3


def test_eval_router_uses_the_onnx_runtime(tmp_path):
    """`eval --router` on the bundled default router (real int8 ONNX): its column mapping is read
    from router.json, the baselines that are fit use --train, the router's own actions are scored."""
    from textrouter.runtime import load_router

    test = slice_table(tmp_path, 40, "test.jsonl")
    train = slice_table(tmp_path, 80, "train.jsonl", edit=lambda rows: rows.__delitem__(slice(0, 40)))
    res = runner.invoke(app, ["eval", str(test), "--router", "default", "--train", str(train), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["actions"] == {"direct": "qwen2_audio_direct", "asr": "whisper_asr_then_gpt4o"}
    rows = doc["results"]
    name = next(k for k in rows if k.startswith("GRPO"))
    # recompute the routed accuracy from the runtime's own decisions
    lines = [json.loads(x) for x in test.read_text(encoding="utf-8").splitlines()]
    routed = load_router("default").route_batch([{"question": r["question"], "choices": r["choices"]} for r in lines])
    col = {"direct": "qwen2_audio_direct", "asr": "whisper_asr_then_gpt4o"}
    acc = np.mean([r["outcomes"][col[x["action"]]] for r, x in zip(lines, routed)])
    assert rows[name]["accuracy"] == pytest.approx(acc)
    assert rows["oracle"]["accuracy"] >= rows[name]["accuracy"]
    assert any("train.jsonl" in n for n in doc["notes"])
    assert rows["best single (fit on train.jsonl)"]["accuracy"] <= rows["oracle"]["accuracy"]
