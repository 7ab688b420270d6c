"""Router encoders (engines): a plain dict registry, `available_encoders()`.

Each engine is one module below this registry (minilm: textrouter.model + textrouter.embed_cache;
minilm-static: textrouter.static); the registry imports them lazily and they never import it or
the training modules above it (textrouter.grpo, .training, .checkpoint, .export), so the import
graph has no cycle (tests/test_training_imports.py).

An encoder turns router texts into features for the head (linear or category mixture:
textrouter.head) and builds the torch policy that
`textrouter.export` writes to ONNX. Both produce the same ONNX signature (input_ids,
attention_mask int64 [batch, seq] -> logits float32 [batch, actions]), so the torch-free runtime
does not care which one a router folder holds; router.json records it as `engine`.

| name | policy | modes | single question, 1 core |
| --- | --- | --- | --- |
| minilm | MiniLM-L6 (LoRA or frozen) + mean pooling + linear head (the paper's policy) | lora, head | ~11 ms int8 |
| minilm-static | token table distilled from MiniLM-L6 + mean + linear head (textrouter.static) | head | ~0.1 ms |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

DEFAULT_ENCODER = "minilm"


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    description: str
    modes: tuple[str, ...]       # training modes this encoder supports (textrouter.grpo.MODES)
    standardize: bool            # head mode: centre + scale features on the training rows (folded into W, b)
    features: Callable[..., Any]  # (texts, max_length) -> float32 [N, D]
    policy_from_head: Callable[..., Any]  # (actions, (W, b), seed) -> torch policy in eval mode
    policy_for_state: Callable[..., Any]  # (checkpoint state dict, n_actions) -> policy to load it into


def _minilm_features(texts: Sequence[str], max_length: int = 128):
    from .embed_cache import embeddings

    return embeddings(texts, max_length)


def _minilm_policy(actions: Sequence[str], head, seed: int = 0):
    from .model import policy_from_head

    return policy_from_head(actions, head, seed=seed)


def _minilm_for_state(state, n_actions: int):
    from .model import policy_for_state

    return policy_for_state(state, n_actions)


def _static_features(texts: Sequence[str], max_length: int = 128):
    from .static import features

    return features(texts, max_length)


def _static_policy(actions: Sequence[str], head, seed: int = 0):
    from .static import policy_from_head

    return policy_from_head(actions, head, seed=seed)


def _static_for_state(state, n_actions: int):
    from .static import policy_for_state

    return policy_for_state(state, n_actions)


def _causal_refuse(*_args, **_kw):
    from .errors import RouterError

    raise RouterError("engine causal-lm has no feature head; train it with textrouter.causal_lm.train_causal "
                      "(`audiorouter train --encoder causal-lm`) and export it with textrouter.causal_export")


ENCODERS: dict[str, EncoderSpec] = {
    "minilm": EncoderSpec(
        "minilm", "MiniLM-L6 transformer (all-MiniLM-L6-v2) + mean pooling; the paper's policy, LoRA-trainable",
        ("lora", "head"), False, _minilm_features, _minilm_policy, _minilm_for_state),
    # Static token features have a much smaller scale than MiniLM's pooled output; centring and
    # scaling them lets the same head lr (1e-2) work (measured, set A CV: 56.2 raw -> 58.9).
    "minilm-static": EncoderSpec(
        "minilm-static", "static token table distilled from MiniLM-L6 + mean pooling; ~100x faster routing",
        ("head",), True, _static_features, _static_policy, _static_for_state),
    # The generative router (textrouter.causal_lm, trained by TRL; textrouter.causal_export): no
    # feature head, so the head/LoRA entry points refuse it with the command that trains it.
    "causal-lm": EncoderSpec(
        "causal-lm", "instruct LM writing `direct` / `<tool_call> NAME </tool_call>` (SmolLM2-135M), TRL GRPO + LoRA",
        ("lora",), False, _causal_refuse, _causal_refuse, _causal_refuse),
}


def available_encoders() -> list[str]:
    return list(ENCODERS)


def get_encoder(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise ValueError(f"encoder {name!r} unknown; valid: {', '.join(ENCODERS)}")
    return ENCODERS[name]
