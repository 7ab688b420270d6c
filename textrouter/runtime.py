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

from textrouter.errors import RouterError
from textrouter.folder import (MODEL_FILES, check_expectations, check_hashes, check_session,
                               load_tokenizer, model_file, open_session, read_router_json,
                               TOKENIZER_FILE)
from textrouter.text import format_input

DEFAULT_ROUTER_DIR = Path(__file__).resolve().parent / "default_router"
FAST_ROUTER_DIR = Path(__file__).resolve().parent / "fast_router"
# Registry of routers shipped inside the package: name -> folder (scripts/build_default_router.py).
# default: MiniLM-L6 + head (~9 ms per question on 1 core, int8, 23 MB);
# fast: minilm-static, a token table distilled from the same MiniLM (~0.2 ms, 94 KB); both were
# trained on the bundled table for direct vs asr and route within a point of each other under CV.
BUNDLED_ROUTERS: dict[str, Path] = {"default": DEFAULT_ROUTER_DIR, "fast": FAST_ROUTER_DIR}
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


def available_routers() -> list[str]:
    """Names of the routers bundled with the package (usable as `load_router(name)`)."""
    return sorted(BUNDLED_ROUTERS)


def _softmax(logits):
    import numpy as np

    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _item_text(item: Any) -> str:
    """Router input text for one batch item: dict {question, choices}, (q, choices) or a string."""
    if isinstance(item, Mapping):
        if "question" not in item:
            raise RouterError(f"batch item {str(item)[:60]!r} has no 'question'; give "
                              "{'question': ..., 'choices': [...]} items")
        question, choices = item["question"], item.get("choices")
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        question, choices = item
    else:
        question, choices = item, None
    return _checked_text(question, choices)


def _checked_text(question: Any, choices: Sequence[str] | None) -> str:
    if not isinstance(question, str):
        raise RouterError(f"question must be a string (got {type(question).__name__}); pass the question text")
    if not question.strip():
        raise RouterError("question is empty; pass the question text (the router reads question + choices)")
    if choices is not None and (isinstance(choices, str) or not all(isinstance(c, str) for c in choices)):
        raise RouterError(f"choices must be a list of strings (got {choices!r:.60}); "
                          "pass e.g. ['yes', 'no'] or None")
    return format_input(question, choices)


class Router:
    """A loaded router: tokenizer + one onnxruntime session. Thread-safe for `route` calls."""

    def __init__(self, folder: Path, meta: dict, session, tokenizer, precision: str):
        self.folder = folder
        self.meta = meta
        self.precision = precision
        self.actions: list[str] = list(meta["actions"])
        self.max_length: int = int(meta["max_length"])
        self.engine: str = str(meta.get("engine", "minilm"))  # textrouter.encoders name
        self._session = session
        tokenizer.no_padding()  # we pad per batch ourselves (route() needs no padding at all)
        self._tokenizer = tokenizer
        pad = tokenizer.token_to_id("[PAD]")
        self._pad = 0 if pad is None else pad

    def __repr__(self) -> str:
        return (f"Router({str(self.folder)!r}, engine={self.engine!r}, actions={self.actions}, "
                f"precision={self.precision!r})")

    def _run(self, encodings):
        """Logits -> probabilities [n, A] for already-padded encodings of one batch."""
        import numpy as np

        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (logits,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        return _softmax(logits.astype(np.float64))

    def _result(self, probs_row, truncated: bool, elapsed_ms: float) -> dict:
        best = int(probs_row.argmax())
        return {"action": self.actions[best],
                "probs": {a: float(p) for a, p in zip(self.actions, probs_row)},
                "truncated": bool(truncated),
                "elapsed_ms": round(elapsed_ms, 3)}

    def route(self, question: str, choices: Sequence[str] | None = None) -> dict:
        """Pick an action for one question. elapsed_ms = tokenise + ONNX + softmax, wall clock."""
        t0 = time.perf_counter()
        text = _checked_text(question, choices)
        enc = self._tokenizer.encode(text)
        probs = self._run([enc])[0]
        return self._result(probs, bool(enc.overflowing), (time.perf_counter() - t0) * 1e3)

    def route_batch(self, items: Iterable[Any], batch_size: int | None = None) -> list[dict]:
        """Route many questions; results in input order.

        Items: {"question": str, "choices": [...] or None} dicts, (question, choices) pairs or
        plain question strings. Questions are sorted by token length and padded per batch to the
        longest one (dynamic padding: less wasted compute than a fixed max_length). elapsed_ms of
        each result is its batch's wall time divided by the batch size. batch_size None: the
        engine's measured best (BATCH_SIZES).
        """
        if batch_size is None:
            batch_size = BATCH_SIZES.get(self.engine, DEFAULT_BATCH_SIZE)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        texts = [_item_text(it) for it in items]
        if not texts:
            return []
        encs = self._tokenizer.encode_batch(texts)  # unpadded: sorted by length, padded per batch
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
        results: list[dict | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t0 = time.perf_counter()
            batch = [encs[i] for i in idx]
            width = max(len(e.ids) for e in batch)
            for e in batch:
                e.pad(width, pad_id=self._pad, pad_token="[PAD]")
            probs = self._run(batch)
            per_item_ms = (time.perf_counter() - t0) * 1e3 / len(idx)
            for row, i in enumerate(idx):
                results[i] = self._result(probs[row], bool(encs[i].overflowing), per_item_ms)
        return results  # type: ignore[return-value]


def resolve_router_path(path: str | os.PathLike | None) -> Path:
    """None / a bundled name -> the bundled folder; anything else is a folder path."""
    if path is None:
        return BUNDLED_ROUTERS["default"]
    if isinstance(path, str) and path in BUNDLED_ROUTERS and not Path(path).exists():
        return BUNDLED_ROUTERS[path]
    return Path(path).expanduser()


def load_router(path: str | os.PathLike | None = None, precision: str = "int8",
                threads: int | None = None, expected_table_sha256: str | None = None,
                expected_actions: Iterable[str] | None = None) -> Router:
    """Load and verify a router folder (see textrouter.folder). Raises RouterLoadError one-liners.

    path: folder, bundled router name (`available_routers()`), or None for the default router.
    precision: "int8" (default; the bundled router ships only int8) or "fp32".
    threads: onnxruntime intra-op threads (None = onnxruntime's default, all cores). For single
      questions use 1: a ~47-token MiniLM pass is too small to split well (measured p50 10.6 ms
      on 1 thread vs 11.3 ms on 2, shared 2-core machine).
    expected_table_sha256 / expected_actions: refuse a router trained on another table / with
    other actions.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)} (got {precision!r})")
    folder = resolve_router_path(path)
    meta = read_router_json(folder)
    check_expectations(meta, expected_table_sha256, expected_actions, where=str(folder))
    name = model_file(meta, precision)
    check_hashes(folder, meta, [TOKENIZER_FILE, name])
    tokenizer = load_tokenizer(folder, int(meta["max_length"]))
    session = open_session(folder / name, threads=threads)
    check_session(session, meta, folder / name)
    return Router(folder, meta, session, tokenizer, precision)
