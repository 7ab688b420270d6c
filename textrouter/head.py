"""The router's output head on pooled features: linear, or a category mixture (numpy and torch forms).

Two head forms travel through training, checkpoints and export:

- **linear** `(W [A, D], b [A])`: logits = W x + b (GRPO heads, the supervised baseline);
- **mixture** `(W [K, D], b [K], M [K, A])`: P(category | x) = softmax(W x + b) over K categories,
  the expected accuracy of each action q = P M (M[c, a]: action a's accuracy on category c's
  rows, shrunk; textrouter.category), logits = log q, so softmax(logits) = q / sum q. This is
  the category router itself, not a linear approximation of it: distilling it into one linear
  head lost 1.8 points on set C and 0.4-0.5 on A and B under nested CV (docs/router-training.md).

Every engine applies the head after pooling, so both forms export through the same ONNX
signature (logits float32 [batch, A]); the static engine folds W into its token table either way
(T = E W^T is [V, K] for a mixture). numpy here; torch is imported inside `torch_head` only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

MIN_MIX = 1e-6  # floor of M's entries: log q stays finite where an action never succeeded in a category


def is_mixture(head) -> bool:
    """True for a (W, b, M) mixture head, False for a (W, b) linear head."""
    return len(head) == 3


def head_actions(head) -> int:
    """A, the number of actions a head scores."""
    return int(np.asarray(head[2]).shape[1] if is_mixture(head) else np.asarray(head[1]).shape[0])


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (logits -> probabilities; shared by export, runtime and heads)."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mixture_logits(z, mix):
    """log(softmax(z) @ mix) for torch tensors: a mixture head's part after its linear map (the
    MiniLM engine applies it to lin(x), the static engine to the pooled folded table)."""
    return (z.softmax(dim=-1) @ mix).log()


def head_logits(features, head) -> np.ndarray:
    """Logits [N, A] of a numpy head on features [N, D] (float32 arithmetic, as the ONNX graph)."""
    w, b = head[0], head[1]
    z = np.asarray(features, dtype=np.float32) @ np.asarray(w, dtype=np.float32).T + np.asarray(b, dtype=np.float32)
    if not is_mixture(head):
        return z
    return np.log(softmax(z.astype(np.float64)) @ np.asarray(head[2], dtype=np.float64)).astype(np.float32)


def head_probs(features, head) -> np.ndarray:
    """Softmax probabilities [N, A] of a numpy head on features [N, D]."""
    return softmax(head_logits(features, head).astype(np.float64)).astype(np.float32)


def torch_head(head=None, in_features: int | None = None, n_actions: int | None = None,
               n_categories: int | None = None) -> Any:
    """The torch module of a head: `torch.nn.Linear` for (W, b), `MixtureLayer` for (W, b, M).
    head None: an empty module of the given shape (to load a checkpoint state dict into);
    n_categories None means linear."""
    import torch

    if head is not None:
        n_categories, in_features = np.asarray(head[0]).shape
        n_categories = n_categories if is_mixture(head) else None
        n_actions = head_actions(head)
    lin = torch.nn.Linear(in_features, n_categories if n_categories else n_actions)
    module = lin if not n_categories else _mixture_class()(lin, n_categories, n_actions)
    if head is not None:
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(np.asarray(head[0], dtype=np.float32)))
            lin.bias.copy_(torch.as_tensor(np.asarray(head[1], dtype=np.float32)))
            if is_mixture(head):
                module.mix.copy_(torch.as_tensor(np.asarray(head[2], dtype=np.float32)))
    return module


def mixture_categories(state: dict) -> int | None:
    """K of a mixture head in a checkpoint state dict (key `head.mix`), None for a linear head."""
    mix = state.get("head.mix")
    return None if mix is None else int(mix.shape[0])


_MIXTURE = None


def _mixture_class():
    global _MIXTURE
    if _MIXTURE is None:
        import torch

        class MixtureLayer(torch.nn.Module):
            """logits = log(softmax(lin(x)) @ mix) (mixture_logits after the linear map)."""

            def __init__(self, lin, n_categories: int, n_actions: int):
                super().__init__()
                self.lin = lin
                self.register_buffer("mix", torch.full((n_categories, n_actions), 1.0 / n_actions))

            def forward(self, x):
                return mixture_logits(self.lin(x), self.mix)

        _MIXTURE = MixtureLayer
    return _MIXTURE
