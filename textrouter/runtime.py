"""Torch-free routing: onnxruntime + tokenizers + numpy only.

```python
import textrouter
router = textrouter.load_router()                       # bundled default router, int8
router.route("What is the speaker saying?", ["yes", "no"])
# {"action": "asr", "probs": {"direct": 0.31, "asr": 0.69}, "truncated": False, "elapsed_ms": 1.2}
router.route_batch([{"question": ..., "choices": [...]}, ...])
```
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from textrouter.bundled import (BUNDLED_ROUTERS, DEFAULT_ROUTER_DIR, FAST_ROUTER_DIR,  # noqa: F401
                                available_routers, resolve_router_path)
from textrouter.decision import DecisionRule, argmax_rule
from textrouter.errors import RouterError
from textrouter.folder import (MODEL_FILES, check_expectations, load_checked, ort_message,
                               read_router_json, truncation_of)
from textrouter.text import InputFitter, input_parts

PRECISIONS = tuple(MODEL_FILES)  # ("fp32", "int8")
# Questions per ONNX call in route_batch. A ~47-token question is already a compute-bound GEMM;
# measured on the 499 dev questions (2 shared cores, first default router): batch 8 165 q/s,
# 16 125, 32 103, 64 97; fused default router, load avg 3.5: 2 threads batch 1/4/8/16/32/64 =
# 107/110/103/88/89/85 q/s, 1 thread 100/125/107/107/102/86 q/s (bigger batches only add padding).
DEFAULT_BATCH_SIZE = 8
# Per router engine (router.json `engine`). minilm-static is a table look-up: batches only amortise
# the per-call overhead (measured, default pair router, 1 thread: batch 8 8.2k q/s, 64 10.5k,
# 256 9.1k, 512 8.3k q/s).
BATCH_SIZES = {"minilm": DEFAULT_BATCH_SIZE, "minilm-static": 64}
# Engines whose int8 results do not depend on the other questions of an ONNX batch. minilm int8
# uses dynamic quantisation, which scales activations over the whole batch tensor (padding
# included): on the 499 dev questions in chunks of 8, route_batch agreed with route on 494/499
# decisions (max |dp| 0.169); minilm-static (a table look-up) on 499/499 with |dp| 0. Routers of
# other engines run int8 batches one question per ONNX call, so a decision never depends on which
# questions share a call (a resume, --concurrency or a gateway burst cannot change it).
BATCH_INVARIANT_ENGINES = ("minilm-static",)


def _softmax(logits):
    from textrouter.head import softmax

    return softmax(logits)


def _item_parts(item: Any) -> tuple[str, str, str]:
    """Router input (prefix, question, suffix) for one batch item: dict {question, choices}, (q, choices) or a string."""
    if isinstance(item, Mapping):
        if "question" not in item:
            raise RouterError(f"batch item {str(item)[:60]!r} has no 'question'; give "
                              "{'question': ..., 'choices': [...]} items")
        question, choices = item["question"], item.get("choices")
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        question, choices = item
    else:
        question, choices = item, None
    return _checked_parts(question, choices)


def _checked_parts(question: Any, choices: Sequence[str] | None) -> tuple[str, str, str]:
    if not isinstance(question, str):
        raise RouterError(f"question must be a string (got {type(question).__name__}); pass the question text")
    if not question.strip():
        raise RouterError("question is empty; pass the question text (the router reads question + choices)")
    if choices is not None and (isinstance(choices, str) or not all(isinstance(c, str) for c in choices)):
        raise RouterError(f"choices must be a list of strings (got {choices!r:.60}); "
                          "pass e.g. ['yes', 'no'] or None")
    return input_parts(question, choices)


def batch_invariant(meta: dict, engine: str, precision: str) -> bool:
    """Whether a folder's decisions are the same whatever the batch, so `route_batch` may batch.

    fp32 always is; int8 only for BATCH_INVARIANT_ENGINES (dynamic int8 scales activations per
    batch tensor, which MiniLM's MatMuls have everywhere). A mixture head (textrouter.head) on
    such an engine is invariant only when its P(category) @ M stayed fp32 at quantisation, as
    exports record since stop 23 (`quantization.fp32_nodes`); older int8 exports quantised it, so
    they run one question per ONNX call instead of deciding by their batch neighbours."""
    if precision == "fp32":
        return True
    if engine not in BATCH_INVARIANT_ENGINES:
        return False
    if (meta.get("head") or {}).get("kind") != "mixture":
        return True
    from textrouter.quantize import MIXTURE_FP32_NODES

    quant = (meta.get("metrics") or {}).get("quantization") or {}
    return quant.get("method") != "blockwise" and MIXTURE_FP32_NODES in str(quant.get("fp32_nodes", ""))


class Router:
    """A loaded router: tokenizer + one onnxruntime session. Thread-safe for `route` calls."""

    def __init__(self, folder: Path, meta: dict, session, tokenizer, precision: str):
        self.folder = folder
        self.meta = meta
        self.precision = precision
        self.actions: list[str] = list(meta["actions"])
        self.max_length: int = int(meta["max_length"])
        self.engine: str = str(meta.get("engine", "minilm"))  # textrouter.encoders name
        self.truncation = truncation_of(meta)  # textrouter.text policy the folder records
        self.batch_invariant = batch_invariant(meta, self.engine, precision)
        self._session = session
        # the fitter owns the tokenizer: it cuts to max_length itself (keeping the choices) and
        # _run pads per batch, so tokenizer truncation and padding are switched off
        self._fitter = InputFitter(tokenizer, self.max_length, self.truncation, own=True)
        self._tokenizer = tokenizer
        pad = tokenizer.token_to_id("[PAD]")
        self._pad = 0 if pad is None else pad
        # textrouter.decision: the fitted margin / tool budget (argmax for folders without one);
        # load_router(margin=, max_tool_rate=) and route(..., margin=) override the stored values
        self.decision = decision_rule(meta)
        self.margin: float | None = None
        self.max_tool_rate: float | None = None

    def __repr__(self) -> str:
        return (f"Router({str(self.folder)!r}, engine={self.engine!r}, actions={self.actions}, "
                f"precision={self.precision!r})")

    def _run(self, batch: Sequence[Sequence[int]]):
        """Logits -> probabilities [n, A] for token id lists, padded here to the batch's longest."""
        import numpy as np

        width = max(len(t) for t in batch)
        ids = np.full((len(batch), width), self._pad, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, tokens in enumerate(batch):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        try:
            (logits,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        except Exception as exc:  # onnxruntime's own classes (InvalidArgument, Fail, RuntimeException)
            raise RouterError(f"onnxruntime failed on this input ({ort_message(exc)}); the router folder "
                              f"{self.folder} is inconsistent: check it with textrouter.folder.validate_folder "
                              "or re-export it with `audiorouter export`") from None
        return _softmax(logits.astype(np.float64))

    def _margin(self, margin: float | None, max_tool_rate: float | None) -> float:
        margin = self.margin if margin is None else margin
        max_tool_rate = self.max_tool_rate if max_tool_rate is None else max_tool_rate
        return self.decision.resolve_margin(margin, max_tool_rate)

    def _result(self, probs_row, truncated: bool, elapsed_ms: float, margin: float = 0.0) -> dict:
        best = int(self.decision.choose(probs_row[None, :], margin=margin)[0])
        return {"action": self.actions[best],
                "probs": {a: float(p) for a, p in zip(self.actions, probs_row)},
                "truncated": bool(truncated),
                "elapsed_ms": round(elapsed_ms, 3)}

    def route(self, question: str, choices: Sequence[str] | None = None, *, margin: float | None = None,
              max_tool_rate: float | None = None) -> dict:
        """Pick an action for one question. elapsed_ms = tokenise + ONNX + softmax, wall clock.
        margin / max_tool_rate: override the folder's decision rule (textrouter.decision)."""
        t0 = time.perf_counter()
        m = self._margin(margin, max_tool_rate)
        tokens, truncated = self._fitter._fit(*_checked_parts(question, choices))
        probs = self._run([tokens])[0]
        return self._result(probs, truncated, (time.perf_counter() - t0) * 1e3, m)

    def route_batch(self, items: Iterable[Any], batch_size: int | None = None, *, margin: float | None = None,
                    max_tool_rate: float | None = None) -> list[dict]:
        """Route many questions; results in input order.

        Items: {"question": str, "choices": [...] or None} dicts, (question, choices) pairs or
        plain question strings. Questions are sorted by token length and padded per batch to the
        longest one (dynamic padding: less wasted compute than a fixed max_length). elapsed_ms of
        each result is its batch's wall time divided by the batch size. batch_size None: the
        engine's measured best (BATCH_SIZES). Results equal `route`'s whatever the batch: a router
        that is not `batch_invariant` runs one question per ONNX call.
        """
        if batch_size is None:
            batch_size = BATCH_SIZES.get(self.engine, DEFAULT_BATCH_SIZE)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        if not self.batch_invariant:
            batch_size = 1
        m = self._margin(margin, max_tool_rate)
        parts = [_item_parts(it) for it in items]
        if not parts:
            return []
        fitted = self._fitter.fit_batch(parts)  # unpadded: sorted by length, padded per batch
        order = sorted(range(len(fitted)), key=lambda i: len(fitted[i][0]))
        results: list[dict | None] = [None] * len(fitted)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t0 = time.perf_counter()
            probs = self._run([fitted[i][0] for i in idx])
            per_item_ms = (time.perf_counter() - t0) * 1e3 / len(idx)
            for row, i in enumerate(idx):
                results[i] = self._result(probs[row], fitted[i][1], per_item_ms, m)
        return results  # type: ignore[return-value]


def load_router(path: str | os.PathLike | None = None, precision: str = "int8",
                threads: int | None = None, expected_table_sha256: str | None = None,
                expected_actions: Iterable[str] | None = None, margin: float | None = None,
                max_tool_rate: float | None = None) -> Router:
    """Load and verify a router folder (see textrouter.folder). Raises RouterLoadError one-liners.

    Verified: router.json fields, file hashes, tokenizer vocabulary vs the model's embedding rows,
    max_length vs its positions, and one probe inference; an onnxruntime failure while routing
    is a RouterError too. Inputs longer than max_length are cut by the folder's truncation
    policy (textrouter.text: the question is cut, the choices kept).

    path: folder, bundled router name (`available_routers()`), or None for the default router.
    precision: "int8" (default; the bundled router ships only int8) or "fp32".
    threads: onnxruntime intra-op threads (None = onnxruntime's default, all cores). For single
      questions use 1: a ~47-token MiniLM pass is too small to split well (measured p50 10.6 ms
      on 1 thread vs 11.3 ms on 2, shared 2-core machine).
    expected_table_sha256 / expected_actions: refuse a router trained on another table / with
    other actions.
    margin / max_tool_rate: override the folder's decision rule (router.json `decision`,
      textrouter.decision): call a tool only when p(tool) - p(direct) > margin x cost; a rate is
      turned into the smallest margin whose fitted tool rate is <= it. None: the stored values.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)} (got {precision!r})")
    folder = resolve_router_path(path)
    meta = read_router_json(folder)
    check_expectations(meta, expected_table_sha256, expected_actions, where=str(folder))
    tokenizer, session = load_checked(folder, meta, precision, threads)
    router = Router(folder, meta, session, tokenizer, precision)
    router.margin, router.max_tool_rate = margin, max_tool_rate
    router._margin(None, None)  # a bad override fails here, at load, with one line
    return router


def decision_rule(meta: Mapping[str, Any]) -> DecisionRule:
    """The folder's decision rule (router.json `decision`), else argmax (margin 0)."""
    doc = meta.get("decision")
    return argmax_rule(meta["actions"]) if doc is None else DecisionRule.from_dict(doc, meta["actions"])
