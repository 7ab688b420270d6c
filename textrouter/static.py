"""`minilm-static`: a static token table distilled from MiniLM-L6, for sub-millisecond routing.

MiniLM-L6 costs ~2.5 ms + 0.19 ms per token on one CPU core (~11 ms for a 47-token question);
almost all of it is the six transformer layers. The static encoder replaces them with a table
look-up (the model2vec recipe, without PCA or weighting):

    E[t] = MiniLM("[CLS] t [SEP]").last_hidden_state[position 1]     float32 [vocab 30522, 384]
    features(text) = mean of E[t] over the text's content tokens

"Content tokens" leaves out [CLS], [SEP], [PAD] and the tokens of the `format_input` template
(`question`, `choices`, `:`, `(`, `)`, the single letters): without contextual attention, a plain
mean is dominated by them, and their share (short vs long choices) then decides the route; a
question with short choices such as "What city does the second speaker say ...? Boston|Chicago"
went to `direct` with p = 1.00 (measured; with the template left out it goes to `asr`).

The router is then a linear head on these features. Because a weighted mean and a linear map
commute, the exported ONNX graph folds the head into the table (`T = E W^T`, float32 [30522,
n_actions]) and computes `logits = sum(w[t] T[t]) / sum(w[t]) + b` (w = 1 for content tokens, 0
otherwise): two Gathers and a ReduceSum, ~0.4 MB, ~0.2 ms per question with tokenisation.
Measured under 5-fold CV (3 seeded splits, docs/router-training.md) it routes within a point of
the full MiniLM encoder.

Distilling the table runs MiniLM once over the vocabulary (~40 s on 2 cores, torch needed: the
`[train]` extra) and is cached as `.npy` under the cache directory, plus in-process.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Sequence

RECIPE = "token-position-1-v1"  # change when the distillation recipe changes (new cache key)
# Tokens of the router-text template (textrouter.text.format_input) and BERT's specials: weight 0.
TEMPLATE_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "question", "choices", ":", "(", ")",
                   *"abcdefghijklmnopqrstuvwxyz")
DISTIL_BATCH = 2048  # vocabulary tokens per MiniLM forward pass (3 positions each)
_TABLES: dict[str, object] = {}  # cache key -> numpy table, per process


@functools.lru_cache(maxsize=1)  # hashes ~1.5 MB of files: once per process, not per call
def _key() -> str:
    from .model import ENCODER_ID, encoder_path

    h = hashlib.sha256(f"{ENCODER_ID}\n{RECIPE}\n".encode())
    h.update((encoder_path() / "model.safetensors").read_bytes()[:1 << 20])  # weights' first MiB
    h.update((encoder_path() / "tokenizer.json").read_bytes())
    return h.hexdigest()[:32]


def table_path() -> Path:
    from .embed_cache import cache_dir

    return cache_dir().parent / "static" / f"minilm-static-{_key()}.npy"


def distil_table(batch: int = DISTIL_BATCH, progress=None):
    """E float32 [vocab, 384]: MiniLM's output at each token placed alone between [CLS] and [SEP]."""
    import numpy as np
    import torch

    from .embed_cache import tokenizer
    from .model import HIDDEN_SIZE, _load_encoder

    tok = tokenizer()
    vocab = tok.get_vocab_size()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    encoder = _load_encoder().eval()
    table = np.zeros((vocab, HIDDEN_SIZE), np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(vocab, start + batch))
            x = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], 1)
            hidden = encoder(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            table[start:start + len(ids)] = hidden[:, 1].numpy()
            if progress is not None:
                progress(len(ids))
    return table


def static_table(use_cache: bool = True, progress=None):
    """The distilled table, from the process memo, the disk cache, or computed (and stored atomically)."""
    import numpy as np

    key = _key()
    if key in _TABLES:
        return _TABLES[key]
    path = table_path()
    table = None
    if use_cache and path.is_file():
        try:
            table = np.load(path)
        except (OSError, ValueError):
            table = None  # corrupt cache entry: recompute and overwrite
    if table is None or table.ndim != 2:
        table = distil_table(progress=progress)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
            np.save(tmp, table)
            os.replace(tmp, path)
    _TABLES[key] = table
    return table


def token_weights(vocab_size: int | None = None):
    """float32 [vocab]: 1 for content tokens, 0 for TEMPLATE_TOKENS."""
    import numpy as np

    from .embed_cache import tokenizer

    tok = tokenizer()
    w = np.ones(vocab_size or tok.get_vocab_size(), np.float32)
    w[[tok.token_to_id(t) for t in TEMPLATE_TOKENS]] = 0.0
    return w


def pool(table, weights, input_ids, attention_mask):
    """Weighted mean of table rows over real content tokens: float32 [N, D] (numpy)."""
    import numpy as np

    ids = np.asarray(input_ids)
    m = (np.asarray(attention_mask, dtype=np.float32) * weights[ids])[..., None]
    return (table[ids] * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def features(texts: Sequence[str], max_length: int = 128, chunk: int = 256):
    """Static features float32 [N, 384] of router texts (same tokenisation as the MiniLM path)."""
    import numpy as np

    from .embed_cache import tokenizer
    from .text import encode_fitted

    table = static_table()
    weights = token_weights(table.shape[0])
    # the runtime's truncation policy (textrouter.text): a long question is cut, its choices kept
    ids, mask, _ = encode_fitted(tokenizer(max_length), list(texts), max_length)
    out = [np.zeros((0, table.shape[1]), np.float32)]
    for s in range(0, len(texts), chunk):  # chunks bound the [chunk, L, 384] gather in memory
        out.append(pool(table, weights, ids[s:s + chunk], mask[s:s + chunk]).astype(np.float32))
    return np.concatenate(out)


def _policy_classes():
    import torch

    from .head import mixture_logits

    def weighted_mean(rows, weights, input_ids, attention_mask):
        w = (attention_mask.float() * torch.nn.functional.embedding(input_ids, weights[:, None])[..., 0]).unsqueeze(-1)
        return (rows * w).sum(1) / w.sum(1).clamp(min=1e-9)

    class StaticPolicy(torch.nn.Module):
        """Embedding [V, 384] (frozen, distilled) -> content-token mean -> Linear(384, A); logits [B, A]."""

        def __init__(self, table, n_actions: int, weights=None):
            super().__init__()
            self.embed = torch.nn.Embedding.from_pretrained(torch.as_tensor(table), freeze=True)
            w = token_weights(table.shape[0]) if weights is None else weights
            self.register_buffer("weights", torch.as_tensor(w, dtype=torch.float32))
            self.head = torch.nn.Linear(table.shape[1], n_actions)

        def forward(self, input_ids, attention_mask):
            return self.head(weighted_mean(self.embed(input_ids), self.weights, input_ids, attention_mask))

        def onnx_module(self):
            """The same function with the head folded into the table: what export writes to ONNX."""
            return FoldedStaticPolicy(self)

    class FoldedStaticPolicy(torch.nn.Module):
        """logits = weighted mean of T[input_ids] + b with T = E W^T: float32 [V, A] (exact algebra);
        a mixture head (textrouter.head) folds its linear map the same way ([V, K]) and applies
        log(softmax(.) @ M) after the mean."""

        def __init__(self, policy):
            super().__init__()
            lin = getattr(policy.head, "lin", policy.head)
            with torch.no_grad():
                folded = policy.embed.weight.double() @ lin.weight.double().T
            self.table = torch.nn.Parameter(folded.float(), requires_grad=False)
            self.bias = torch.nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
            self.register_buffer("weights", policy.weights.clone())
            mix = getattr(policy.head, "mix", None)
            self.register_buffer("mix", None if mix is None else mix.detach().clone())

        def forward(self, input_ids, attention_mask):
            rows = torch.nn.functional.embedding(input_ids, self.table)
            z = weighted_mean(rows, self.weights, input_ids, attention_mask) + self.bias
            return z if self.mix is None else mixture_logits(z, self.mix)

    return StaticPolicy, FoldedStaticPolicy


def build_static_policy(n_actions: int, head=None, table=None, weights=None, n_categories: int | None = None):
    """A StaticPolicy over the distilled table; `head` = a numpy head, linear (W [A, 384], b [A]) or
    mixture (W [K, 384], b [K], M [K, A]) (textrouter.head), or random init (a mixture of
    `n_categories` when given). `table`/`weights` None: the cached distilled table / TEMPLATE_TOKENS weights."""
    from .head import torch_head

    policy = _policy_classes()[0](static_table() if table is None else table, n_actions, weights)
    if head is not None:
        policy.head = torch_head(head)
    elif n_categories:
        policy.head = torch_head(in_features=policy.embed.weight.shape[1], n_actions=n_actions,
                                 n_categories=n_categories)
    return policy.eval()


def policy_from_head(actions: Sequence[str], head, seed: int = 0):
    """Engine hook (textrouter.encoders): the static policy carrying a trained head."""
    return build_static_policy(len(actions), head)


def policy_for_state(state, n_actions: int):
    """Engine hook: an empty static policy for a checkpoint state dict; the distilled table and the
    token weights travel in the checkpoint (no re-distillation)."""
    from .head import mixture_categories

    return build_static_policy(n_actions, table=state["embed.weight"].numpy(), weights=state["weights"].numpy(),
                               n_categories=mixture_categories(state))
