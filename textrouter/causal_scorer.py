"""The causal-lm router's torch policy: each action's log-probability given a router text.

`build_scorer(model, tokenizer, prompt, score)` -> `ActionScorer`, an nn.Module mapping the router
text's token ids (input_ids, attention_mask int64 [batch, seq], right-padded, the ONNX runtime's
signature) to `[batch, actions]` log-probabilities; the routed action is their argmax. The export
(textrouter.causal_export) traces this module, so the torch and ONNX policies are one definition.

What is scored (`available_scores()`):
- "decision" (default): log p of the action's completion tokens up to and including the first
  token no other action's completion has at that place (`direct`; `<tool_call> asr`) -- where
  the generative policy commits to one action. The rest (` </tool_call>` + end-of-turn) is fixed
  by the format the format reward trains, and scoring it costs ~6 forward tokens per tool.
  The scored prefixes are prefix-free, so their probabilities sum to <= 1.
- "sequence": log p(whole completion + end-of-turn | prompt), the exact sequence probability.

The actions' scored tokens form a trie: a token prefix two actions share (`<tool_call>`) is one
node, run once; nodes nothing is predicted from (the last scored token of each action) are not
run at all. One forward covers the router text, the suffix and every trie node (a tree attention
mask), on top of the prompt prefix's key/value cache, which is a constant of the graph.
"""
from __future__ import annotations

import json
from typing import Sequence

from textrouter.causal_prompt import RoutingPrompt, action_token_ids

# score name -> what the scorer's log-probability is of (router.json `causal_lm.score_definition`)
SCORES: dict[str, str] = {
    "decision": "log p(completion tokens up to the first one no other action shares | prompt)",
    "sequence": "log p(completion tokens + end-of-turn | prompt)",
}
DEFAULT_SCORE = "decision"


def available_scores() -> list[str]:
    return list(SCORES)


def check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"score {score!r} unknown; valid: {', '.join(SCORES)}")
    return score


def scored_token_ids(tokenizer, prompt: RoutingPrompt, score: str = DEFAULT_SCORE) -> list[list[int]]:
    """Each action's scored token ids under `score` (see the module docstring)."""
    full = action_token_ids(tokenizer, prompt)
    if check_score(score) == "sequence":
        return full
    out = []
    for a, ids in enumerate(full):
        others = [b for k, b in enumerate(full) if k != a]
        j = 0  # first place where no other completion has this action's tokens so far
        while j < len(ids) - 1 and any(b[:j + 1] == ids[:j + 1] for b in others):
            j += 1
        out.append(ids[:j + 1])
    return out


def action_trie(suffix: Sequence[int], actions: Sequence[Sequence[int]]) -> dict:
    """The graph constants of the tree pass (plain lists; ActionScorer turns them into buffers).

    const: suffix tokens, then one input per trie node something is predicted from;
    vis[i][j]: const input i may attend to const input j (its own ancestors, the suffix, itself);
    depth[i]: position of const input i after the real prompt tokens;
    src/tgt: per scored edge, the const input predicting it (-1 = the last real prompt token) and
    the token it predicts; seg[e][a] = 1 when action a's score includes edge e."""
    n_s = len(suffix)
    const = list(suffix)
    parent_of = [i - 1 for i in range(n_s)]       # suffix: a chain
    depth = list(range(n_s))
    node: dict[tuple[int, ...], int] = {(): n_s - 1}  # token path -> const index (root: last suffix token)
    edges: dict[tuple[int, ...], int] = {}        # token path incl. the predicted token -> scored edge
    src, tgt, seg = [], [], []
    for a, ids in enumerate(actions):
        for j, t in enumerate(ids):
            path = tuple(ids[:j + 1])
            if path not in edges:
                edges[path] = len(tgt)
                src.append(node[path[:-1]])
                tgt.append(int(t))
                seg.append([0.0] * len(actions))
            seg[edges[path]][a] = 1.0
            if j + 1 < len(ids) and path not in node:  # the next scored token is predicted from here
                node[path] = len(const)
                parent_of.append(node[path[:-1]])
                const.append(int(t))
                depth.append(n_s + j)
    n_c = len(const)
    vis = [[False] * n_c for _ in range(n_c)]
    for i in range(n_c):
        k = i
        while k >= 0:  # itself and every ancestor: trie nodes end their chain in the whole suffix
            vis[i][k] = True
            k = parent_of[k]
    return {"const": const, "vis": vis, "depth": depth, "src": src, "tgt": tgt, "seg": seg}


def build_scorer(model, tokenizer, prompt: RoutingPrompt, score: str = DEFAULT_SCORE):
    """ActionScorer(model): (input_ids, attention_mask) of router texts -> [B, A] log-probs."""
    prefix = list(tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"])
    suffix = list(tokenizer(prompt.suffix, add_special_tokens=False)["input_ids"])
    return _scorer_class()(model, prefix, suffix, scored_token_ids(tokenizer, prompt, score))


def _scorer_class():
    import warnings

    import torch
    from torch import nn

    class ActionScorer(nn.Module):
        """One forward over [router text, suffix, the actions' trie nodes] with a tree mask, on top
        of the prompt prefix's key/value cache (computed once here: the prefix is the same for every
        question, so its keys and values are constants of the graph, not recomputed per route).

        Each trie node sees the prompt's real tokens, the suffix and its own ancestors only, at
        positions real_len + depth, so one pass gives every action's log-probability exactly as
        separate passes would (tests/test_causal_lm.py checks it). The router text is right-padded
        (the runtime pads per batch); padded keys are masked out. The prefix's last token is run
        with the text (not cached), so an empty text still has a token to predict from."""

        def __init__(self, model, prefix: list[int], suffix: list[int], actions: list[list[int]]):
            super().__init__()
            self.model = model
            if not prefix:
                raise ValueError("the prompt prefix is empty; the scorer needs at least one prefix token")
            trie = action_trie(suffix, actions)
            # transformers 5.x names the cache argument `cache` (and logs a deprecation line for
            # `past_key_values`); the 4.x releases TRL 1.16 supports only know `past_key_values`
            import inspect

            params = inspect.signature(model.model.forward).parameters
            self.cache_arg = "cache" if "cache" in params else "past_key_values"
            self.n_cached = len(prefix) - 1
            kv = []
            if self.n_cached:
                with torch.no_grad():  # [layers, 2, 1, kv_heads, n_cached, head_dim]
                    out = model.model(input_ids=torch.tensor([prefix[:-1]]), use_cache=True)
                    cache = out.cache if "cache" in out else out.past_key_values  # 5.x name, then 4.x
                    kv = [torch.stack([layer.keys, layer.values]) for layer in cache.layers]
            self.register_buffer("prefix_kv", torch.stack(kv) if kv else torch.zeros(0), persistent=False)
            self.register_buffer("head_ids", torch.tensor(prefix[-1:], dtype=torch.long)[None, :], persistent=False)
            self.register_buffer("const_ids", torch.tensor(trie["const"], dtype=torch.long)[None, :],
                                 persistent=False)
            self.register_buffer("const_vis", torch.tensor(trie["vis"], dtype=torch.bool), persistent=False)
            self.register_buffer("const_depth", torch.tensor(trie["depth"], dtype=torch.long), persistent=False)
            self.register_buffer("src", torch.tensor(trie["src"], dtype=torch.long), persistent=False)
            self.register_buffer("tgt", torch.tensor(trie["tgt"], dtype=torch.long), persistent=False)
            self.register_buffer("seg", torch.tensor(trie["seg"], dtype=torch.float32), persistent=False)

        def forward(self, input_ids, attention_mask):
            from transformers import DynamicCache

            b, length = input_ids.shape
            c = self.n_cached            # cached prefix tokens, positions 0 .. c-1
            n_c = self.const_ids.shape[1]
            dev = input_ids.device
            mask = attention_mask.to(torch.bool)
            n_real = 1 + attention_mask.sum(dim=1)                                     # head token + text [B]
            ids = torch.cat([self.head_ids.expand(b, -1), input_ids, self.const_ids.expand(b, -1)], dim=1)
            t0 = 1 + length                                                              # new head rows
            pos_head = c + torch.arange(t0, device=dev)[None, :].expand(b, -1)
            pos_const = (c + n_real)[:, None] + self.const_depth[None, :]
            positions = torch.cat([pos_head, pos_const], dim=1)
            key_head = torch.cat([torch.ones(b, c + 1, dtype=torch.bool, device=dev), mask], dim=1)  # [B, c + t0]
            causal = torch.tril(torch.ones(t0, c + t0, dtype=torch.bool, device=dev), diagonal=c)
            top = torch.cat([causal[None] & key_head[:, None, :],
                             torch.zeros(b, t0, n_c, dtype=torch.bool, device=dev)], dim=2)
            bottom = torch.cat([key_head[:, None, :].expand(b, n_c, c + t0), self.const_vis[None].expand(b, -1, -1)], dim=2)
            allowed = torch.cat([top, bottom], dim=1)[:, None]                          # [B, 1, t0 + n_c, c + t0 + n_c]
            neg = torch.finfo(torch.float32).min
            add_mask = torch.zeros(allowed.shape, dtype=torch.float32, device=dev).masked_fill(~allowed, neg)
            past = None
            if c:
                kv = self.prefix_kv.expand(-1, -1, b, -1, -1, -1)
                past = DynamicCache(ddp_cache_data=[(kv[i, 0], kv[i, 1]) for i in range(kv.shape[0])])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                hidden = self.model.model(input_ids=ids, attention_mask=add_mask, position_ids=positions,
                                          use_cache=past is not None, **{self.cache_arg: past}).last_hidden_state
            # the input predicting each scored token: const index, or (-1) the last real prompt token
            last = (n_real - 1)[:, None]
            where = torch.where(self.src[None, :] < 0, last, t0 + self.src[None, :].clamp(min=0))  # [B, S]
            picked = torch.gather(hidden, 1, where[:, :, None].expand(-1, -1, hidden.shape[-1]))
            logp = torch.log_softmax(self.model.lm_head(picked).float(), dim=-1)     # [B, S, V]
            tok = torch.gather(logp, 2, self.tgt[None, :, None].expand(b, -1, 1))[:, :, 0]
            return tok @ self.seg                                                     # [B, A]

    return ActionScorer


def encode_router_texts(tokenizer, texts: Sequence[str], max_length: int):
    """(input_ids, attention_mask) int64 numpy, right-padded, the way the ONNX runtime builds them
    (textrouter.text.InputFitter over the fast tokenizer, no special tokens added)."""
    from textrouter.text import encode_fitted

    raw = runtime_tokenizer(tokenizer)
    ids, mask, _ = encode_fitted(raw, texts, max_length, pad_id=0)
    return ids, mask


def runtime_tokenizer(tokenizer):
    """The `tokenizers.Tokenizer` a causal-lm router folder ships: the base's, post-processor off
    (the runtime's encode then adds no BOS/EOS: the prompt's tokens are baked into the graph)."""
    from tokenizers import Tokenizer

    doc = json.loads(tokenizer.backend_tokenizer.to_str())
    doc["post_processor"] = None
    doc["truncation"] = None
    doc["padding"] = None
    return Tokenizer.from_str(json.dumps(doc))


def score_texts(scorer, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 16):
    """float64 [N, A] action log-probs for router texts (torch, no grad)."""
    import numpy as np
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask = encode_router_texts(tokenizer, texts[i:i + batch_size], max_length)
            out.append(scorer(torch.from_numpy(ids), torch.from_numpy(mask)).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, scorer.seg.shape[1]))
