"""The generative `causal-lm` router: prompt, TRL rewards, the tree-mask scorer, real TRL GRPO steps,
the ONNX export and torch-free routing. A tiny random Llama (2 layers, hidden 32) with a BPE
tokenizer trained here on the bundled table's texts stands in for SmolLM2 (nothing downloaded)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from textrouter import causal_lm as C  # noqa: E402
from textrouter.errors import RouterError, RouterLoadError  # noqa: E402
from textrouter.table import BUNDLED_TABLE, ActionMapping, load_table, outcome_matrix, texts  # noqa: E402

MAPPING = ActionMapping("qwen2_audio_direct", {"asr": "whisper_asr_then_gpt4o"})
ACTIONS = MAPPING.actions
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_base(corpus, seed=0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  bos_token="<|im_start|>")
    tok.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, use_cache=True)
    return LlamaForCausalLM(cfg).eval(), tok


def prefit(model, tok, prompt, texts_, labels, steps=80, lr=1e-2):
    """Plain supervised LM steps (one padded batch) on prompt + completion of `labels`: the tiny
    random model then writes valid actions, so GRPO gets non-zero advantages."""
    acts = C.action_token_ids(tok, prompt)
    seqs = [(tok(prompt.wrap(t), add_special_tokens=False)["input_ids"], acts[a]) for t, a in zip(texts_, labels)]
    width = max(len(p) + len(c) for p, c in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    lab = torch.full((len(seqs), width), -100)
    for i, (p, c) in enumerate(seqs):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, :len(p) + len(c)] = 1
        lab[i, len(p):len(p) + len(c)] = torch.tensor(c)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny matrices: a second intra-op thread only spins against the other jobs on the CPU
    # (measured: the prefit takes 10 s on 1 thread, ~90 s on 2 busy cores)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table():
    tab = load_table(BUNDLED_TABLE, MAPPING)
    return texts(tab), outcome_matrix(tab, MAPPING)


@pytest.fixture(scope="module")
def base(table):
    x, _ = table
    corpus = x + [C.instruction(ACTIONS)] * 20 + [C.completion_of(a) for a in ACTIONS] * 50
    model, tok = tiny_base(corpus)
    prompt = C.routing_prompt(tok, ACTIONS)
    prefit(model, tok, prompt, x[:32], [i % 2 for i in range(32)], steps=80)  # half direct, half asr
    return model, tok, prompt


def test_parse_completion_accepts_exactly_one_valid_action():
    assert C.parse_completion("direct", ACTIONS) == 0
    assert C.parse_completion("  <tool_call> asr </tool_call>\n", ACTIONS) == 1
    assert C.parse_completion("<tool_call>asr</tool_call>", ACTIONS) == 1
    for bad in ("direct answer", "<tool_call> chords </tool_call>", "<tool_call> direct </tool_call>",
                "<tool_call> asr", "asr", "", "<tool_call> asr </tool_call> direct"):
        assert C.parse_completion(bad, ACTIONS) is None, bad


def test_rewards_are_the_papers_relative_reward_plus_format():
    opts = C.CausalOptions()
    # outcomes (direct, asr): the four cases of the relative reward
    assert C.relative_rewards([0, 1], opts) == [-1.0, 5.0]
    assert C.relative_rewards([1, 0], opts) == [1.0, -5.0]
    assert C.relative_rewards([1, 1], opts) == [1.0, -0.1]
    assert C.relative_rewards([0, 0], opts) == [-1.0, -0.1]
    outcome, fmt = C.OutcomeReward(ACTIONS, opts), C.FormatReward(ACTIONS)
    comps = ["<tool_call> asr </tool_call>", "direct", "blah", [{"role": "assistant", "content": "direct"}]]
    outs = [[0, 1], [0, 1], [1, 1], [1, 0]]
    assert outcome(prompts=[""] * 4, completions=comps, outcomes=outs) == [5.0, -1.0, C.INVALID_OUTCOME_REWARD, 1.0]
    assert fmt(prompts=[""] * 4, completions=comps) == [1.0, 1.0, -1.0, 1.0]


def test_options_and_base_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="num_generations"):
        C.CausalOptions(num_generations=1)
    with pytest.raises(ValueError, match="lr"):
        C.CausalOptions(lr=float("nan"))
    with pytest.raises(RouterError, match="--base smollm2-135m or a local"):
        C.load_base(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RouterError, match="no config.json"):
        C.load_base(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="direct"):
        C.routing_prompt(None, ["asr", "direct"])


def test_prompt_is_prefix_text_suffix_token_wise(base, table):
    _, tok, prompt = base
    x, _ = table
    assert "Tools: asr." in prompt.prefix and prompt.suffix.endswith("assistant\n")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    raw = C.runtime_tokenizer(tok)
    for t in x[:50]:
        # what TRL tokenises (the whole prompt) == what the ONNX graph sees (prefix + runtime ids + suffix)
        assert enc(prompt.wrap(t)) == enc(prompt.prefix) + raw.encode(t).ids + enc(prompt.suffix)


@pytest.mark.parametrize("score", C.available_scores())
def test_scorer_equals_one_pass_per_action_with_padding(base, table, score):
    model, tok, _ = base
    x, _ = table
    prompt = C.routing_prompt(tok, ACTIONS + ["caption"])  # two tools: the trie shares `<tool_call>`
    scorer = C.build_scorer(model, tok, prompt, score)
    got = C.score_texts(scorer, tok, x[:6], batch_size=3)  # batches of unequal lengths: right padding
    acts = C.scored_token_ids(tok, prompt, score)
    want = np.zeros_like(got)
    for i, t in enumerate(x[:6]):
        p = tok(prompt.wrap(t), add_special_tokens=False)["input_ids"]
        for a, ids in enumerate(acts):
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([p + ids])).logits[0].double(), -1)
            want[i, a] = sum(float(lp[len(p) - 1 + j, ids[j]]) for j in range(len(ids)))
    assert np.abs(got - want).max() < 1e-3
    assert got.std(axis=0).min() > 1e-4  # scores depend on the question: the comparison is not trivial
    # the graph runs each shared token prefix once and no action's last scored token
    n_suffix = len(tok(prompt.suffix, add_special_tokens=False)["input_ids"])
    inner = {tuple(ids[:j]) for ids in acts for j in range(1, len(ids))}
    assert scorer.const_ids.shape[1] == n_suffix + len(inner) < n_suffix + sum(len(ids) for ids in acts)


def test_decision_score_stops_where_each_action_parts_from_the_others(base, table):
    _, tok, _ = base
    x, _ = table
    prompt = C.routing_prompt(tok, ACTIONS + ["caption"])
    full = C.action_token_ids(tok, prompt)
    dec = C.scored_token_ids(tok, prompt, "decision")
    assert C.scored_token_ids(tok, prompt, "sequence") == full
    for a, ids in enumerate(dec):
        others = [b for k, b in enumerate(full) if k != a]
        assert full[a][:len(ids)] == ids and len(ids) < len(full[a])      # a proper prefix of the completion
        assert not any(b[:len(ids)] == ids for b in others)               # which no other action starts with
        assert any(b[:len(ids) - 1] == ids[:-1] for b in others) or len(ids) == 1  # and one token shorter is shared
    assert len(dec[1]) > 1 and dec[1][:-1] == dec[2][:-1]  # both tools: `<tool_call>` then their own name
    # prefix-free scored strings: the actions' probabilities are disjoint events
    lp = C.score_texts(C.build_scorer(base[0], tok, prompt, "decision"), tok, x[:8])
    assert (np.exp(lp).sum(1) <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="valid: decision, sequence"):
        C.scored_token_ids(tok, prompt, "first-token")


@pytest.fixture(scope="module")
def trained(base, table):
    import copy

    model, tok, prompt = base
    x, _ = table
    n = 16
    o_asr = np.tile(np.array([[0, 1]], dtype=np.int8), (n, 1))  # asr always right, direct always wrong
    before = C.score_texts(C.build_scorer(model, tok, prompt), tok, x[:n])
    opts = C.CausalOptions(lr=5e-3, warmup_steps=1, max_steps=4, num_generations=4, prompts_per_step=2, seed=0,
                           format_sft_steps=2, threads=1)
    steps, events = [], []  # events: ("step", n) markers and the training flag of every dropout call

    def on_dropout(module, _args):
        if isinstance(module, torch.nn.Dropout):
            events.append(("dropout", module.training))

    def on_step(s, t, st):
        steps.append((s, t, st["phase"]))
        events.append(("step", s))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(on_dropout)
    try:
        res = C.train_causal(x[:n], o_asr, ACTIONS, opts, on_step=on_step, base=(copy.deepcopy(model), tok))
    finally:
        hook.remove()
    return res, before, steps, x[:n], events


def test_grpo_rollouts_run_without_dropout_and_the_loss_with_it(trained):
    events = trained[4]
    first = events.index(("step", 1))  # after it: whole GRPO steps (the primer ran before)
    flags = [on for kind, on in events[first:] if kind == "dropout"]
    # every later step: generation + reference log-probs with dropout off, the loss forward with it on
    assert flags.count(False) > 0 and flags.count(True) > 0, (flags.count(False), flags.count(True))


def test_trl_grpo_moves_the_policy_toward_the_rewarded_action(trained):
    res, before, steps, x = trained[:4]
    assert steps[0] == (1, 5, "warmup") and steps[-1] == (5, 5, "outcome")
    assert [e["phase"] for e in res.log[:2]] == ["format_sft", "format_sft"]
    names = {k for e in res.log for k in e}
    assert "rewards/outcome_reward/mean" in names and "rewards/format_reward/mean" in names
    assert all("rewards/outcome_reward/mean" not in e for e in res.log if e["phase"] == "warmup")
    after = C.score_texts(C.build_scorer(res.model, res.tokenizer, res.prompt), res.tokenizer, x)
    # log-odds of asr over direct rise on average (the reward favours asr on every question)
    gain = (after[:, 1] - after[:, 0]) - (before[:, 1] - before[:, 0])
    assert gain.mean() > 0.15, gain  # measured +0.38 after 4 steps at lr 5e-3
    assert after[:, 1].mean() > before[:, 1].mean()  # and asr itself became more likely


def test_export_routes_torch_free_and_agrees_with_torch(trained, table, tmp_path):
    from textrouter import causal_export as E

    res = trained[0]
    x, _ = table
    out = tmp_path / "router"
    doc = E.export_causal(res.model, res.tokenizer, res.prompt, out, x[:48], {"column_mapping": MAPPING.to_dict()})
    assert doc["engine"] == "causal-lm" and doc["actions"] == ACTIONS
    assert doc["causal_lm"]["score"] == C.DEFAULT_SCORE == "decision"
    assert doc["metrics"]["fp32_agreement"] >= 0.99
    lp = C.score_texts(C.build_scorer(res.model, res.tokenizer, res.prompt), res.tokenizer, x[:48])
    torch_actions = lp.argmax(1)
    want_probs = np.exp(lp - lp.max(1, keepdims=True))
    want_probs /= want_probs.sum(1, keepdims=True)
    script = textwrap.dedent(f"""
        import json, sys
        import textrouter
        r = textrouter.load_router({str(out)!r}, precision="fp32", threads=1)
        rows = [json.loads(l) for l in open({str(BUNDLED_TABLE)!r})][:48]
        res = r.route_batch([{{"question": q["question"], "choices": q["choices"]}} for q in rows])
        one = r.route(rows[0]["question"], rows[0]["choices"])
        print(json.dumps({{"actions": [x["action"] for x in res], "one": one["action"],
                          "probs": [[x["probs"][a] for a in r.actions] for x in res],
                          "heavy": [m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules]}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert got["actions"] == [ACTIONS[a] for a in torch_actions]
    probs = np.array(got["probs"])
    assert np.abs(probs - want_probs).max() < 1e-3 and probs.std(axis=0).max() > 1e-4
    assert got["one"] == got["actions"][0]
    # a tampered model file is refused at load, like every router folder
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes()[:-10])
    import textrouter

    with pytest.raises(RouterLoadError, match="sha256"):
        textrouter.load_router(out, precision="fp32")


def test_cli_export_of_a_causal_checkpoint_writes_a_loadable_router(trained, tmp_path):
    """`audiorouter export CKPT` recognises a causal-lm checkpoint (causal.json) and writes an
    engine: causal-lm folder that loads (fp32) with the same checks as every router folder."""
    from typer.testing import CliRunner

    from cli.main import app

    res = trained[0]
    ckpt = C.save_checkpoint(res, tmp_path / "ckpt", {"column_mapping": MAPPING.to_dict()})
    small = tmp_path / "check.jsonl"
    small.write_text("".join(line for line in open(BUNDLED_TABLE).readlines()[:24]))
    run = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "r"), "--check-table", str(small),
                                   "--json"])
    assert run.exit_code == 0, run.output[-2000:]
    doc = json.loads(run.stdout[run.stdout.index("{"):])
    assert doc["engine"] == "causal-lm" and doc["actions"] == ACTIONS
    import textrouter

    router = textrouter.load_router(tmp_path / "r", precision="fp32")
    assert router.engine == "causal-lm" and router.route("What is said?", ["a", "b"])["action"] in ACTIONS
    bad = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "r2"), "--score", "first-token"])
    assert bad.exit_code != 0 and "valid: decision, sequence" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "r2").exists()  # refused before any work


def test_gguf_load_draws_no_tqdm_bar_of_its_own(capsys):
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    before = gguf_utils.tqdm
    with C._no_gguf_bar():
        assert list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")) == [0, 1, 2]
    assert gguf_utils.tqdm is before
    assert "GGUF" not in capsys.readouterr().err  # the bar transformers would draw on stderr
