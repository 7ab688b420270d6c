"""The one place that joins textrouter, toolcache and reasoner: route -> tool -> reasoner.

`textrouter`, `toolcache` and `reasoner` never import each other; this module passes plain dicts
between them: one question end to end (`route_question`), the reasoner options, the audio and
router checks, the tool calls and the reasoner-answer cache (namespace "reasoner" of the toolcache
SQLite file). The resumable loops over a dataset live in `cli.collecting` (`collect`) and
`cli.batching` (`batch`), with what they share in `cli.resumable`.

Heavy imports (onnxruntime via textrouter, the tool back-ends, HTTP client) happen inside functions.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# Envelope keys that change between a cold compute and a cache hit: kept out of the reasoner's
# prompt (and so out of the reasoner-answer cache key), which must depend on the evidence only.
_VOLATILE_EVIDENCE_KEYS = ("elapsed_s", "cached")


class PipelineError(ValueError):
    """Bad pipeline input or configuration (exit 2 through friendly_errors); one line + fix."""


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReasonerConfig:
    """Which frozen reasoner answers, and how to reach it. `name` None = no reasoner (edge use)."""

    name: str | None = None
    url: str | None = None          # OpenAI-compatible base URL, e.g. http://host:8000/v1
    model: str | None = None        # model id served there / local checkpoint for HF back-ends
    timeout_s: float | None = None  # per-request timeout in seconds
    max_retries: int | None = None  # extra attempts after a timeout / 5xx (None = back-end default)
    concurrency: int | None = None  # parallel requests of the openai back-end (None = its default)
    audio_part: str | None = None   # openai back-end: input_audio | audio_url | none (text-only model)

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"--timeout must be > 0 seconds (got {self.timeout_s})")
        if self.max_retries is not None and not 0 <= self.max_retries <= 10:
            raise ValueError(f"--retries must be between 0 and 10 (got {self.max_retries})")
        if self.concurrency is not None and not 1 <= self.concurrency <= 256:
            raise ValueError(f"--concurrency must be between 1 and 256 (got {self.concurrency})")
        if self.url is not None:
            from reasoner.options import check_base_url

            check_base_url(self.url.strip())  # userinfo refused here, before anything is sent
        if self.audio_part is not None:
            from reasoner.options import AUDIO_PARTS

            if self.audio_part not in AUDIO_PARTS:
                raise ValueError(f"--audio-part must be one of {', '.join(AUDIO_PARTS)} (got {self.audio_part!r})")
            if self.name not in (None, "openai"):
                raise ValueError(f"--audio-part is an option of the openai reasoner (an HTTP chat server); "
                                 f"{self.name} always hears the audio: drop --audio-part or use --reasoner openai")
        if self.name is not None:
            from reasoner import available_reasoners

            names = available_reasoners()
            if self.name not in names:
                raise ValueError(f"unknown reasoner {self.name!r}; available reasoners: {', '.join(names)}")

    @classmethod
    def from_cli(cls, name: str | None, url: str | None, model: str | None,
                 timeout_s: float | None, max_retries: int | None = None,
                 concurrency: int | None = None, audio_part: str | None = None) -> "ReasonerConfig":
        # A URL alone (--reasoner-url or $AUDIOROUTER_REASONER_URL) means the OpenAI-compatible
        # back-end (vLLM): the common case.
        import os

        from reasoner.options import ENV_URL

        if name is None and (url is not None or os.environ.get(ENV_URL, "").strip()):
            name = "openai"
        return cls(name=name, url=url, model=model, timeout_s=timeout_s, max_retries=max_retries,
                   concurrency=concurrency, audio_part=audio_part)

    @property
    def enabled(self) -> bool:
        return self.name is not None

    def create(self):
        """Instantiate the reasoner back-end (lazy import of the reasoner package)."""
        from reasoner import create_reasoner

        options: dict[str, Any] = {}
        if self.url is not None:
            options["base_url"] = self.url
        if self.model is not None:
            options["model"] = self.model
        if self.timeout_s is not None:
            options["timeout_s"] = self.timeout_s
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        if self.concurrency is not None and self.name == "openai":
            options["concurrency"] = self.concurrency
        if self.audio_part is not None and self.name == "openai":
            options["audio_part"] = self.audio_part
        return create_reasoner(self.name, **options)


HOW_TO_ADD_A_REASONER = ("add --reasoner openai --reasoner-url http://host:8000/v1 "
                         "--model Qwen/Qwen2-Audio-7B-Instruct (any OpenAI-compatible server, e.g. vLLM)")


# --------------------------------------------------------------------------------------------
# The three packages, joined
# --------------------------------------------------------------------------------------------

def check_audio(path: str | Path) -> str:
    """Fail early (toolcache AudioError, one line) on a missing/empty/corrupt clip; return its sha256.

    Decodes at most the first second: enough for libsndfile to validate the header and data.
    """
    from toolcache.audio import load_audio

    return load_audio(str(path), max_seconds=1.0).sha256


def load_router(router_dir: str | Path | None = None, precision: str = "int8", margin: float | None = None,
                max_tool_rate: float | None = None, threads: int | None = None):
    """textrouter's ONNX runtime router (None = the bundled default router). The precision is
    checked here first so the CLI's message names the option (--precision), not a Python keyword."""
    from textrouter import load_router as _load
    from textrouter.runtime import MODEL_FILES, resolve_router_path

    if precision not in MODEL_FILES:
        raise PipelineError(f"--precision must be one of {', '.join(sorted(MODEL_FILES))} (got {precision!r})")
    folder = resolve_router_path(None if router_dir is None else str(router_dir))
    model_file = folder / MODEL_FILES[precision]
    if folder.is_dir() and (folder / "router.json").is_file() and not model_file.is_file():
        have = [p for p, f in sorted(MODEL_FILES.items()) if (folder / f).is_file()]
        raise PipelineError(
            f"router {router_label(router_dir)} has no {precision} model ({model_file.name}; it has: "
            f"{', '.join(have) or 'none'}); use --precision {have[0] if have else 'int8'}, or export the "
            f"checkpoint again with `audiorouter export` (it keeps model.onnx unless --no-fp32)")
    # margin / max_tool_rate: override the router's decision rule (textrouter.decision), None = stored
    # threads: onnxruntime intra-op threads (None = all cores; the gateway runs one per core instead)
    return _load(None if router_dir is None else str(router_dir), precision=precision, margin=margin,
                 max_tool_rate=max_tool_rate, threads=threads)


def router_label(router_dir: str | Path | None) -> str:
    """How results name the router: 'default' (bundled) or the folder given."""
    return "default" if router_dir is None else str(router_dir)


def direct_action(router) -> str:
    meta = getattr(router, "meta", None) or {}
    return str(meta.get("direct_action") or router.actions[0])


def check_router_tools(router) -> list[str]:
    """The router's tool actions, each a toolcache tool; PipelineError naming both registries if not."""
    from toolcache import available_tools

    tools = available_tools()
    direct = direct_action(router)
    routed = [a for a in router.actions if a != direct]
    missing = [a for a in routed if a not in tools]
    if missing:
        raise PipelineError(
            f"router action(s) {', '.join(missing)} are not toolcache tools "
            f"(router actions: {', '.join(router.actions)}; toolcache tools: {', '.join(tools) or 'none'}); "
            "use a router trained with --tool NAME=COLUMN where NAME is a toolcache tool")
    return routed


def check_tools(names: Iterable[str]) -> list[str]:
    from toolcache import available_tools

    tools = available_tools()
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in tools]
    if unknown:
        raise PipelineError(f"unknown tool(s) {', '.join(unknown)}; available tools: {', '.join(tools)}")
    if "direct" in names:
        raise PipelineError("'direct' is always collected; list only tools in --tools")
    return names


def run_tool(tool: str, audio: str | Path, use_cache: bool = True) -> dict:
    import toolcache

    return toolcache.run(tool, str(audio), cache=use_cache)


def run_tools(tools: Sequence[str], audio: str | Path, use_cache: bool = True) -> dict[str, dict]:
    """Several tools on one clip (decoded once per sample rate among the cache misses)."""
    import toolcache

    return dict(toolcache.run_many(list(tools), str(audio), cache=use_cache))


def evidence_for_prompt(evidence: Mapping[str, Any] | None) -> dict | None:
    """The tool envelope without timing/cache flags (they must not change the prompt)."""
    if evidence is None:
        return None
    return {k: v for k, v in evidence.items() if k not in _VOLATILE_EVIDENCE_KEYS}


def prompt_text(question: str, choices: Sequence[str], evidence: Mapping[str, Any] | None) -> str:
    """The reasoner's prompt as canonical JSON text (part of the reasoner-answer cache key)."""
    from reasoner.prompt import build_messages, prompt_text as _text

    return _text(build_messages(question, list(choices), evidence_for_prompt(evidence)))


def reasoner_messages(question: str, choices: Sequence[str], evidence: Mapping[str, Any] | None,
                      audio: str | Path | None, audio_part: str = "input_audio") -> list[dict]:
    """The chat messages `route` sends to an OpenAI-compatible reasoner for one question: the
    evidence without timing flags, the audio part unless audio_part is "none". For a gateway."""
    from reasoner.openai_backend import chat_messages

    return chat_messages(audio, question, list(choices), evidence_for_prompt(evidence), audio_part_style=audio_part)


def identity_digest(identity: Mapping[str, Any]) -> str:
    """Digest of a reasoner configuration for output files (`collect`'s `reasoner`, `batch`'s run
    record): the server URL is left out so a run resumes against the same weights behind another
    address (a restarted server, a replica); the answer cache key keeps it."""
    identity = {k: v for k, v in identity.items() if k != "server"}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class AnswerCache:
    """Reasoner answers in the toolcache SQLite file (namespace "reasoner").

    Key = reasoner.cache_identity() + the prompt text + the audio's sha256: a different model,
    prompt version, generation setting, evidence or clip misses. For the openai back-end the
    identity holds the server's base URL and the weights it serves under the model name (the
    `root` of GET /v1/models), so building the cache asks the server once (ReasonerUnavailable
    when it is down: cached answers are never passed off as a run against an unreachable server).
    """

    NAMESPACE = "reasoner"

    def __init__(self, reasoner, enabled: bool = True):
        self.reasoner = reasoner
        self.enabled = enabled
        self.identity = dict(reasoner.cache_identity())
        self.label = "/".join(str(self.identity[k]) for k in ("backend", "model") if self.identity.get(k)) \
            or "reasoner"
        self._cache = None
        self.hits = 0
        self.misses = 0

    def served_from_cache_note(self) -> str | None:
        """One line saying how many answers came from the cache and whose they are (None if none)."""
        if not self.hits:
            return None
        where = self.identity.get("server")
        served = self.identity.get("served_root")
        whose = f"{self.label}" + (f" at {where}" if where else "") + (f", serving {served}" if served else "")
        return (f"{self.hits} reasoner answer(s) served from the cache (same prompt, audio and {whose}); "
                "--no-cache asks the server again")

    def _store(self):
        if self._cache is None:
            from toolcache import Cache

            self._cache = Cache()
        return self._cache

    def _key(self, audio_sha256: str, question: str, choices: Sequence[str], ev: Mapping[str, Any] | None) -> dict:
        # "reasoner" is the cache row's label (shown by `cache stats`); "identity" the full config.
        return {"reasoner": self.label, "identity": self.identity,
                "prompt": prompt_text(question, choices, ev), "audio_sha256": audio_sha256}

    def answer(self, audio: str | Path, audio_sha256: str, question: str, choices: Sequence[str],
               evidence: Mapping[str, Any] | None) -> dict:
        result = self.answer_many([(audio, audio_sha256, question, choices, evidence)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def answer_many(self, items: Sequence[tuple]) -> list:
        """items: (audio, audio_sha256, question, choices, evidence). Cache misses go to the
        reasoner together (its answer_many runs them concurrently / batched); a failed request
        yields its exception in its slot. Results carry `cached`."""
        results: list = [None] * len(items)
        todo: list[tuple[int, dict | None, dict]] = []
        for i, (audio, sha, question, choices, evidence) in enumerate(items):
            ev = evidence_for_prompt(evidence)
            key = self._key(sha, question, choices, ev) if self.enabled else None
            if key is not None:
                hit = self._store().get_json(self.NAMESPACE, key)
                if hit is not None:
                    self.hits += 1
                    results[i] = dict(hit, cached=True)
                    continue
            todo.append((i, key, {"audio_path": str(audio), "question": question, "choices": list(choices),
                                  "evidence": ev}))
        if not todo:
            return results
        self.misses += len(todo)
        if len(todo) == 1:
            try:
                r = self.reasoner.answer(**todo[0][2])
                answers = [r]
            except Exception as exc:  # noqa: BLE001 - placed in its slot, re-raised by the caller
                answers = [exc]
        else:
            answers = self.reasoner.answer_many([req for _, _, req in todo], return_exceptions=True)
        for (i, key, _), ans in zip(todo, answers):
            if isinstance(ans, BaseException):
                results[i] = ans
                continue
            ans = dict(ans)
            ans.pop("cached", None)
            if key is not None:
                self._store().put_json(self.NAMESPACE, key, ans)
            results[i] = dict(ans, cached=False)
        return results


def route_question(router, question: str, choices: Sequence[str] | None, audio: str | Path, *,
                   router_name: str = "default", reasoner=None, answer_cache: AnswerCache | None = None,
                   use_cache: bool = True, audio_sha256: str | None = None, routed: Mapping | None = None) -> dict:
    """One question end to end. Returns the `route --json` document.

    The router sees only question + choices; a tool runs only if chosen (direct => no tool); the
    reasoner (if any) answers once, with the tool's evidence or none. `routed`: the router's
    result when already computed (batch routes a chunk at once with route_batch).
    """
    doc, exc = route_question_keeping_partial(
        router, question, choices, audio, router_name=router_name, reasoner=reasoner,
        answer_cache=answer_cache, use_cache=use_cache, audio_sha256=audio_sha256, routed=routed)
    if exc is not None:
        raise exc
    return doc


def route_question_keeping_partial(router, question: str, choices: Sequence[str] | None, audio: str | Path, *,
                                   router_name: str = "default", reasoner=None,
                                   answer_cache: AnswerCache | None = None, use_cache: bool = True,
                                   audio_sha256: str | None = None, routed: Mapping | None = None
                                   ) -> tuple[dict, BaseException | None]:
    """Like route_question, but a failing reasoner does not throw the routing decision and the
    evidence away: returns (document with answer None and `reasoner_error`, the exception)."""
    from reasoner.errors import ReasonerError

    t0 = time.perf_counter()
    if audio_sha256 is None:
        audio_sha256 = check_audio(audio)  # before routing: bad audio fails fast, nothing computed
    if routed is None:
        routed = router.route(question, list(choices) if choices else None)
    action = routed["action"]
    routing = {"action": action, "probs": {k: float(v) for k, v in routed["probs"].items()},
               "elapsed_ms": float(routed.get("elapsed_ms", 0.0)), "router": router_name,
               "truncated": bool(routed.get("truncated", False))}
    timings = {"routing_ms": routing["elapsed_ms"], "tool_ms": 0.0, "reasoner_ms": 0.0}
    evidence = None
    if action != direct_action(router):
        t = time.perf_counter()
        evidence = run_tool(action, audio, use_cache=use_cache)
        timings["tool_ms"] = (time.perf_counter() - t) * 1000.0
    answer, failure = None, None
    if reasoner is not None:
        if not choices:
            raise PipelineError('a reasoner answers multiple-choice questions: add --choices "A|B|C"')
        t = time.perf_counter()
        try:
            if answer_cache is not None:
                answer = answer_cache.answer(audio, audio_sha256, question, choices, evidence)
            else:
                answer = dict(reasoner.answer(str(audio), question, list(choices), evidence_for_prompt(evidence)),
                              cached=False)
        except ReasonerError as exc:
            failure = exc
        timings["reasoner_ms"] = (time.perf_counter() - t) * 1000.0
    timings["total_ms"] = (time.perf_counter() - t0) * 1000.0
    timings = {k: round(v, 3) for k, v in timings.items()}
    doc = {"question": question, "choices": list(choices) if choices else [], "audio": str(audio),
           "routing": routing, "evidence": evidence, "answer": answer, "timings": timings}
    if failure is not None:
        from cli.errors import mask_secrets

        doc["reasoner_error"] = mask_secrets(" ".join(str(failure).split()))
    return doc, failure
