"""What a reasoner is (`Reasoner`) and which back-ends exist (`REASONERS`).

A back-end module is imported only when `create_reasoner` asks for it, so `import reasoner` stays
light (no torch, no transformers). Every back-end implements `_generate(items) -> list[str]`
(raw replies for prepared requests); the base class does validation, prompting, parsing, timing
and the result schema, so all back-ends answer in the same shape:

    {"choice": str | None, "index": int | None, "raw": str,
     "matched_by": "exact" | "letter" | "similar" | "none", "model": str, "elapsed_s": float}
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from reasoner.errors import ReasonerError
from reasoner.parse import parse_answer
from reasoner.prompt import PROMPT_VERSION, build_messages, validate_question


@dataclass(frozen=True)
class Prepared:
    """One validated request: what a back-end needs to produce a raw reply."""

    audio_path: Path
    question: str
    choices: list[str]
    evidence: dict | None
    messages: list[dict]  # text-only chat messages from reasoner.prompt.build_messages


class Reasoner:
    """A frozen audio LLM answering multiple-choice questions about one audio file."""

    name = "base"

    def __init__(self, options: Any) -> None:
        self.options = options

    # -- implemented by back-ends ------------------------------------------------------------
    @property
    def model(self) -> str:
        """Model id used in results and the cache identity."""
        raise NotImplementedError

    def _generate(self, items: list[Prepared]) -> list:
        """One reply per prepared request (same order): raw text, or (raw text, elapsed_s) when
        the back-end times each request itself, or a ReasonerError for a request that failed
        while others succeeded (raised by `answer`, placed in its slot by `answer_many`)."""
        raise NotImplementedError

    def _generation_params(self) -> dict:
        """Parameters that change the answers (part of the cache identity)."""
        return {}

    def _batch_size(self) -> int:
        """How many requests answer_many hands to `_generate` at once."""
        return 1

    # -- shared ------------------------------------------------------------------------------
    def prepare(self, audio_path: str | Path, question: str, choices: Sequence[str],
                evidence: dict | None = None) -> Prepared:
        """Validate one request and build its prompt; ReasonerError naming the fix on bad input."""
        path = Path(audio_path)
        if not path.is_file():
            raise ReasonerError(f"audio file not found: {path} (check the path; the reasoner needs the audio itself)")
        cleaned = validate_question(question, choices)
        if evidence is not None and not isinstance(evidence, dict):
            raise ReasonerError(f"evidence must be a tool output dict or None, got {type(evidence).__name__}")
        messages = build_messages(question, cleaned, evidence,
                                  max_evidence_chars=self.options.max_evidence_chars)
        return Prepared(path, question, cleaned, evidence, messages)

    def _result(self, item: Prepared, raw: Any, elapsed_s: float) -> dict:
        if isinstance(raw, BaseException):
            raise raw
        if isinstance(raw, tuple):
            raw, elapsed_s = raw
        index, matched_by = parse_answer(raw, item.choices)
        return {"choice": item.choices[index] if index is not None else None, "index": index,
                "raw": raw, "matched_by": matched_by, "model": self.model,
                "elapsed_s": round(elapsed_s, 4)}

    def answer(self, audio_path: str | Path, question: str, choices: Sequence[str],
               evidence: dict | None = None) -> dict:
        """Answer one question: the audio plus, when a tool ran, its output as evidence."""
        item = self.prepare(audio_path, question, choices, evidence)
        start = time.perf_counter()
        raw = self._generate([item])[0]
        return self._result(item, raw, time.perf_counter() - start)

    def answer_many(self, requests: Sequence[dict], return_exceptions: bool = False) -> list:
        """Answer many requests ({"audio_path", "question", "choices", "evidence"?}) in order.

        Uses the back-end's concurrency (parallel HTTP requests) or batching (one generate call
        per `batch_size` requests). `elapsed_s` of each result is its share of the wall time of
        its batch (back-ends with per-request timing override it). With return_exceptions=True a
        failed request yields its exception in its slot instead of raising.
        """
        results: list = [None] * len(requests)
        prepared: list[tuple[int, Prepared]] = []
        for i, request in enumerate(requests):
            try:
                prepared.append((i, self.prepare(request["audio_path"], request["question"],
                                                 request["choices"], request.get("evidence"))))
            except (ReasonerError, KeyError, TypeError) as exc:
                if not return_exceptions:
                    raise ReasonerError(f"request {i}: {exc}") from exc
                results[i] = exc
        size = self._batch_size()
        for start in range(0, len(prepared), size):
            chunk = prepared[start:start + size]
            t0 = time.perf_counter()
            try:
                raws = self._generate([item for _, item in chunk])
            except ReasonerError as exc:
                if not return_exceptions:
                    raise
                for i, _ in chunk:
                    results[i] = exc
                continue
            share = (time.perf_counter() - t0) / max(1, len(chunk))
            for (i, item), raw in zip(chunk, raws):
                try:
                    results[i] = self._result(item, raw, share)
                except ReasonerError as exc:
                    if not return_exceptions:
                        raise
                    results[i] = exc
        return results

    def cache_identity(self) -> dict:
        """What determines the answers, besides audio and prompt text: use it in cache keys."""
        return {"backend": self.name, "model": self.model, "prompt_version": PROMPT_VERSION,
                "params": self._generation_params()}

    def cancel(self) -> None:
        """Abort in-flight requests (Ctrl-C); back-ends without any (in-process models) do nothing."""

    def close(self) -> None:
        """Release resources (thread pools, GPU memory)."""

    def __enter__(self) -> "Reasoner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# name -> "module:factory"; the factory takes **options and returns a Reasoner.
REASONERS: dict[str, str] = {
    "openai": "reasoner.openai_backend:create",
    "qwen2-audio": "reasoner.hf_backend:create_qwen2_audio",
    "qwen2.5-omni": "reasoner.hf_backend:create_qwen25_omni",
}


def available_reasoners() -> list[str]:
    """Names accepted by `create_reasoner` (and the CLI's --reasoner)."""
    return list(REASONERS)


def create_reasoner(name: str, **options: Any) -> Reasoner:
    """Build a back-end by name; unknown names / options raise with the valid choices."""
    if name not in REASONERS:
        raise ReasonerError(f"unknown reasoner {name!r}; choose one of: {', '.join(REASONERS)}")
    module_name, factory_name = REASONERS[name].split(":")
    factory: Callable[..., Reasoner] = getattr(importlib.import_module(module_name), factory_name)
    return factory(**options)
