"""The `minilm-static` engine: a token table distilled from the real MiniLM-L6, GRPO head, folded
ONNX export, torch-free routing. The table is distilled once per test session (~40 s on 2 cores)
and shared through textrouter.static's in-process memo."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli.main import app  # noqa: E402
from textrouter import static  # noqa: E402
from textrouter.table import BUNDLED_TABLE  # noqa: E402
from textrouter.text import format_input  # noqa: E402

runner = CliRunner()
MAP = ["--direct", "qwen2_audio_direct", "--tool", "asr=whisper_asr_then_gpt4o"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    # distilled once into a module cache dir (never ~/.cache); later calls hit the in-process memo
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIOROUTER_CACHE_DIR", str(tmp_path_factory.mktemp("static-cache")))
        return static.static_table()


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in BUNDLED_TABLE.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow  # the module's `table` fixture distils MiniLM: ~50 s on 2 cores
def test_table_rows_are_minilm_outputs(table):
    from textrouter.embed_cache import tokenizer
    from textrouter.model import _load_encoder

    tok = tokenizer()
    assert table.shape == (tok.get_vocab_size(), 384) and table.dtype == np.float32
    encoder = _load_encoder().eval()
    for word in ("speaker", "guitar", "dog", "[SEP]"):
        t = tok.token_to_id(word)
        x = torch.tensor([[tok.token_to_id("[CLS]"), t, tok.token_to_id("[SEP]")]])
        with torch.inference_mode():
            want = encoder(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0, 1].numpy()
        assert np.allclose(table[t], want, atol=1e-4), word
    # distinct tokens get distinct, non-degenerate vectors
    a, b = table[tok.token_to_id("speaker")], table[tok.token_to_id("guitar")]
    assert np.linalg.norm(a - b) > 0.1 * np.linalg.norm(a)


@pytest.mark.slow  # the module's `table` fixture distils MiniLM: ~50 s on 2 cores
def test_table_disk_cache_is_reused(table, monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOROUTER_CACHE_DIR", str(tmp_path))
    path = static.table_path()
    path.parent.mkdir(parents=True)
    np.save(path, table)
    monkeypatch.setattr(static, "_TABLES", {})
    monkeypatch.setattr(static, "distil_table", lambda **kw: pytest.fail("recomputed despite the disk cache"))
    assert np.array_equal(static.static_table(), table)
    # a corrupt cache file is recomputed, not trusted
    path.write_bytes(b"not numpy")
    monkeypatch.setattr(static, "_TABLES", {})
    monkeypatch.setattr(static, "distil_table", lambda **kw: table[:10])
    assert static.static_table().shape == (10, 384)
    assert np.load(path).shape == (10, 384)  # rewritten atomically


@pytest.mark.slow  # the module's `table` fixture distils MiniLM: ~50 s on 2 cores
def test_features_ignore_the_template_and_specials(table):
    feats = static.features([format_input("Which dog barks?", ["one", "two"]), "which dog barks? one two"])
    assert np.allclose(feats[0], feats[1], atol=1e-6)  # "Question:", "(A)", [CLS]... carry no weight
    other = static.features(["Which guitar plays?"])[0]
    assert not np.allclose(feats[0], other, atol=1e-3)


@pytest.mark.slow  # the module's `table` fixture distils MiniLM: ~50 s on 2 cores
def test_folded_export_form_equals_the_policy(table):
    w = np.random.RandomState(0).normal(size=(3, 384)).astype(np.float32)
    b = np.array([0.1, -0.2, 0.3], np.float32)
    policy = static.build_static_policy(3, (w, b))
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2054, 2003, 1029, 102]])
    mask = (ids != 0).long()
    mask[0, 4] = 0
    with torch.inference_mode():
        full, folded = policy(ids, mask), policy.onnx_module()(ids, mask)
    assert torch.allclose(full, folded, atol=1e-4)
    # and the numpy features + head give the same logits
    x = static.pool(table, static.token_weights(table.shape[0]), ids.numpy(), mask.numpy())
    assert np.allclose(x @ w.T + b, full.numpy(), atol=1e-4)


@pytest.mark.slow  # the module's `table` fixture distils MiniLM: ~50 s on 2 cores
def test_train_export_route_end_to_end(table, tmp_path, rows):
    ckpt, out = tmp_path / "ckpt", tmp_path / "router"
    # no --mode: minilm-static trains in head mode by default
    res = runner.invoke(app, ["train", str(BUNDLED_TABLE), "--out", str(ckpt), "--encoder", "minilm-static",
                              "--json", *MAP])
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["engine"] == "minilm-static" and meta["mode"] == "head"
    m = meta["metrics"]
    assert m["train_routed_accuracy"] > m["train_always_direct"] + 0.05  # learns something in-sample
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads((out / "router.json").read_text())
    assert doc["engine"] == "minilm-static"
    assert doc["metrics"]["fp32_vs_torch_max_abs_diff"] < 1e-4
    assert doc["metrics"]["int8_vs_fp32_agreement"] >= 0.99
    # the head is folded into the table: [30522, columns] float32, the token weights and little else (columns = the
    # actions of a linear head, the categories of a mixture head: textrouter.head)
    cols = len(doc["head"]["categories"]) if doc["head"]["kind"] == "mixture" else len(doc["actions"])
    assert (out / "model.onnx").stat().st_size < 30522 * (cols + 1) * 4 + 100_000  # + token weights [30522]

    from textrouter.grpo import policy_probs
    from textrouter.checkpoint import load_checkpoint
    from textrouter.runtime import load_router

    policy, _ = load_checkpoint(ckpt)
    sample = rows[:64]
    want = policy_probs(policy, [format_input(r["question"], r["choices"]) for r in sample])
    for precision, tol in (("fp32", 1e-4), ("int8", 0.05)):
        router = load_router(out, precision=precision)
        got = router.route_batch([{"question": r["question"], "choices": r["choices"]} for r in sample])
        probs = np.array([[g["probs"][a] for a in router.actions] for g in got])
        assert np.abs(probs - want).max() < tol, precision


@pytest.mark.slow  # the module's `table` fixture distils MiniLM: ~50 s on 2 cores
def test_static_cv_beats_always_direct(table):
    res = runner.invoke(app, ["eval", str(BUNDLED_TABLE), "--cv", "5", "--encoder", "minilm-static", "--json", *MAP])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)["runs"][0]["summary"]
    grpo = summary["GRPO router"]["accuracy_mean"]
    # measured (seed 0): 58.7% vs always-direct 54.5%, oracle 69.3%
    assert grpo > summary["always direct"]["accuracy_mean"] + 0.02
    assert grpo < summary["oracle"]["accuracy_mean"]


@pytest.mark.parametrize("args, fragment", [
    (["--encoder", "minilm-static", "--mode", "lora"], "trains in mode head only"),
    (["--encoder", "bert-huge", "--mode", "head"], "valid: minilm, minilm-static"),
])
def test_bad_encoder_choices_are_one_line(tmp_path, args, fragment):
    res = runner.invoke(app, ["train", str(BUNDLED_TABLE), "--out", str(tmp_path / "x"), *args, *MAP])
    assert res.exit_code == 2
    assert fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1
