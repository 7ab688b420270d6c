"""The one place that joins textrouter, toolcache and reasoner: route -> tool -> reasoner.

`textrouter`, `toolcache` and `reasoner` never import each other; this module passes plain dicts
between them. It also holds the resumable loops behind `collect` (outcome table) and `batch`
(routed benchmark predictions): rows are appended to a JSONL file one by one (flush + fsync), a
re-run skips ids already written, and reasoner answers are cached in the toolcache SQLite file
(namespace "reasoner") so a re-run does not ask the server again.

Heavy imports (onnxruntime via textrouter, the tool back-ends, HTTP client) happen inside functions.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cli.datasets import Dataset, Question

# Envelope keys that change between a cold compute and a cache hit: kept out of the reasoner's
# prompt (and so out of the reasoner-answer cache key), which must depend on the evidence only.
_VOLATILE_EVIDENCE_KEYS = ("elapsed_s", "cached")

DEFAULT_MAX_CONSECUTIVE_FAILURES = 5
DEFAULT_CHUNK = 8  # questions whose reasoner requests `batch` sends together


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

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"--timeout must be > 0 seconds (got {self.timeout_s})")
        if self.max_retries is not None and not 0 <= self.max_retries <= 10:
            raise ValueError(f"--retries must be between 0 and 10 (got {self.max_retries})")
        if self.concurrency is not None and not 1 <= self.concurrency <= 256:
            raise ValueError(f"--concurrency must be between 1 and 256 (got {self.concurrency})")
        if self.name is not None:
            from reasoner import available_reasoners

            names = available_reasoners()
            if self.name not in names:
                raise ValueError(f"unknown reasoner {self.name!r}; available reasoners: {', '.join(names)}")

    @classmethod
    def from_cli(cls, name: str | None, url: str | None, model: str | None,
                 timeout_s: float | None, max_retries: int | None = None,
                 concurrency: int | None = None) -> "ReasonerConfig":
        # A URL alone means the OpenAI-compatible back-end (vLLM): the common case.
        if name is None and url is not None:
            name = "openai"
        return cls(name=name, url=url, model=model, timeout_s=timeout_s, max_retries=max_retries,
                   concurrency=concurrency)

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


def load_router(router_dir: str | Path | None = None, precision: str = "int8"):
    """textrouter's ONNX runtime router (None = the bundled default router)."""
    from textrouter import load_router as _load

    return _load(None if router_dir is None else str(router_dir), precision=precision)


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


def identity_digest(identity: Mapping[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class AnswerCache:
    """Reasoner answers in the toolcache SQLite file (namespace "reasoner").

    Key = reasoner.cache_identity() + the prompt text + the audio's sha256: a different model,
    prompt version, generation setting, evidence or clip misses.
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
                   use_cache: bool = True, audio_sha256: str | None = None) -> dict:
    """One question end to end. Returns the `route --json` document.

    The router sees only question + choices; a tool runs only if chosen (direct => no tool); the
    reasoner (if any) answers once, with the tool's evidence or none.
    """
    t0 = time.perf_counter()
    if audio_sha256 is None:
        audio_sha256 = check_audio(audio)  # before routing: bad audio fails fast, nothing computed
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
    answer = None
    if reasoner is not None:
        if not choices:
            raise PipelineError('a reasoner answers multiple-choice questions: add --choices "A|B|C"')
        t = time.perf_counter()
        if answer_cache is not None:
            answer = answer_cache.answer(audio, audio_sha256, question, choices, evidence)
        else:
            answer = dict(reasoner.answer(str(audio), question, list(choices), evidence_for_prompt(evidence)),
                          cached=False)
        timings["reasoner_ms"] = (time.perf_counter() - t) * 1000.0
    timings["total_ms"] = (time.perf_counter() - t0) * 1000.0
    timings = {k: round(v, 3) for k, v in timings.items()}
    return {"question": question, "choices": list(choices) if choices else [], "audio": str(audio),
            "routing": routing, "evidence": evidence, "answer": answer, "timings": timings}


# --------------------------------------------------------------------------------------------
# Resumable JSONL
# --------------------------------------------------------------------------------------------

class JsonlAppender:
    """Append-only JSONL: one row per line, flushed and fsync'd before `write` returns.

    On open, a torn last line (the process was killed mid-write) is cut off: that row was never
    acknowledged, so it is recomputed. Every complete line is kept.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with open(self.path, "r+b") as fh:
                    fh.truncate(cut)
                data = data[:cut]
            for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise PipelineError(f"{self.path} line {lineno} is not valid JSON; fix or delete that "
                                        "line (or the file) and re-run") from None
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.append(dict(row))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Loops shared by collect and batch
# --------------------------------------------------------------------------------------------

def is_correct(choice: str | None, answer: str | None) -> bool:
    if choice is None or answer is None:
        return False
    return " ".join(str(choice).split()).casefold() == " ".join(str(answer).split()).casefold()


class FailureGuard:
    """Counts consecutive reasoner failures; stops the run at `limit` (ReasonerUnavailable).

    A connection failure before any success is not a flaky question but a wrong URL / a server
    that is down: it stops at once (exit 3 with the URL) instead of failing every row.
    """

    def __init__(self, limit: int = DEFAULT_MAX_CONSECUTIVE_FAILURES):
        if limit < 1:
            raise ValueError(f"--max-failures must be >= 1 (got {limit})")
        self.limit = limit
        self.consecutive = 0
        self.successes = 0

    def ok(self) -> None:
        self.consecutive = 0
        self.successes += 1

    def failed(self, exc: BaseException) -> None:
        from reasoner.errors import ReasonerTimeout, ReasonerUnavailable

        self.consecutive += 1
        if self.successes == 0 and not isinstance(exc, ReasonerTimeout):
            raise exc
        if self.consecutive >= self.limit:
            line = " ".join(str(exc).split())
            raise ReasonerUnavailable(
                f"stopped after {self.consecutive} consecutive reasoner failures (last: {line}); "
                "every row written so far is kept: fix the server (or raise --timeout) and re-run "
                "the same command to resume")


@dataclass
class RunSummary:
    total: int = 0
    skipped_done: int = 0           # already in the output from an earlier run
    processed: int = 0              # rows handled in this run (incl. errors)
    errors: int = 0                 # error rows (missing audio, no choices, reasoner timeout...)
    unmatched: dict[str, int] = field(default_factory=dict)   # per action: answers matching no choice
    server_calls: int = 0           # reasoner requests made (cache misses)
    cache_hits: int = 0             # reasoner answers served from the cache


def _error_row(q: Question, message: str) -> dict:
    return {"id": q.id, "question": q.question, "choices": list(q.choices), "audio": q.audio,
            "error": " ".join(str(message).split())}


def _audio_or_error(q: Question) -> tuple[str | None, str | None]:
    """(sha256, None) when the row's clip is usable, else (None, error message)."""
    from toolcache.errors import ToolcacheError

    if q.error:
        return None, q.error
    try:
        return check_audio(q.audio), None
    except ToolcacheError as exc:
        return None, f"row {q.id}: {exc}"


def _short_answer(ans: Mapping[str, Any]) -> dict:
    return {"choice": ans.get("choice"), "index": ans.get("index"), "matched_by": ans.get("matched_by"),
            "raw": ans.get("raw"), "model": ans.get("model"), "elapsed_s": ans.get("elapsed_s"),
            "cached": ans.get("cached", False)}


def collect(dataset: Dataset, reasoner, tools: Sequence[str], out: str | Path, *,
            use_cache: bool = True, max_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
            chunk_size: int = DEFAULT_CHUNK, on_row: Callable[[dict], None] | None = None) -> RunSummary:
    """Run the reasoner directly and with each tool's evidence on every question -> outcome table.

    Table rows: {id, question, choices, answer, task, audio, outcomes{direct, <tool>...},
    predictions{action: answer}, reasoner}. Unusable rows go to `<out>.errors.jsonl` (the table
    stays trainable) and are retried on the next run. Questions go `chunk_size` at a time: tools
    per question (CPU), then all (question, action) reasoner requests of the chunk together.
    """
    from reasoner.errors import ReasonerUnavailable
    from toolcache.errors import ToolcacheError

    if chunk_size < 1:
        raise ValueError(f"--concurrency must be >= 1 (got {chunk_size})")
    out = Path(out)
    cache = AnswerCache(reasoner, enabled=use_cache)
    rid = identity_digest(cache.identity)
    summary = RunSummary(total=len(dataset))
    guard = FailureGuard(max_failures)
    actions = ["direct", *tools]
    with JsonlAppender(out) as table, JsonlAppender(out.with_name(out.name + ".errors.jsonl")) as errs:
        for row in table.rows:
            if row.get("reasoner") is not None and row.get("reasoner") != rid:
                raise PipelineError(
                    f"{out} was collected with another reasoner configuration ({row.get('reasoner')} != {rid}); "
                    "write to a new --out file or delete the old one")
            have = set(row.get("outcomes", {}))
            if not set(actions) <= have:
                raise PipelineError(
                    f"{out} holds rows without outcomes for {', '.join(sorted(set(actions) - have))}; "
                    "write to a new --out file to collect another tool set")
        done = {row["id"] for row in table.rows if "id" in row}
        pending = [q for q in dataset.questions if q.id not in done]
        summary.skipped_done = len(dataset) - len(pending)
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start:start + chunk_size]
            # 1. audio check + every tool, per question (one decode per clip for all tools)
            staged: list[tuple[Question, str | None, dict | None, str | None]] = []
            for q in chunk:
                sha, err = _audio_or_error(q)
                if err is None and q.answer is None:
                    err = f"row {q.id}: no 'answer' field (collect scores answers: add the correct choice)"
                evidence = None
                if err is None:
                    try:
                        evidence = {"direct": None, **run_tools(tools, q.audio)}
                    except ToolcacheError as exc:
                        err = f"row {q.id}: {exc}"
                staged.append((q, sha, evidence, err))
            # 2. all reasoner requests of the chunk together (direct + one per tool, per question)
            asks = [(q.audio, sha, q.question, q.choices, ev[a])
                    for q, sha, ev, err in staged if err is None for a in actions]
            answers = iter(cache.answer_many(asks)) if asks else iter(())
            # 3. rows in dataset order, each flushed + fsync'd
            for q, sha, ev, err in staged:
                failure: BaseException | None = None
                if err is None:
                    got = [next(answers) for _ in actions]
                    failed = next((a for a in got if isinstance(a, BaseException)), None)
                    if failed is not None and not isinstance(failed, ReasonerUnavailable):
                        raise failed  # bad configuration (4xx, unknown model): stop; rows so far are kept
                    if failed is not None:
                        err, failure = f"row {q.id}: {failed}", failed
                    else:
                        if any(not a.get("cached") for a in got):
                            guard.ok()
                        preds, outcomes = {}, {}
                        for action, ans in zip(actions, got):
                            preds[action] = _short_answer(ans)
                            outcomes[action] = int(is_correct(ans.get("choice"), q.answer))
                            if ans.get("matched_by") == "none":
                                summary.unmatched[action] = summary.unmatched.get(action, 0) + 1
                        row = {"id": q.id, "question": q.question, "choices": list(q.choices), "answer": q.answer,
                               "task": q.group, "audio": q.audio, "outcomes": outcomes, "predictions": preds,
                               "reasoner": rid}
                summary.processed += 1
                if err is not None:
                    row = _error_row(q, err)
                    summary.errors += 1
                    errs.write(row)
                else:
                    table.write(row)
                if on_row is not None:
                    on_row(row)
                if failure is not None:
                    guard.failed(failure)  # raises (ends the run) when the server looks down
    summary.server_calls, summary.cache_hits = cache.misses, cache.hits
    return summary


def collect_report(table_path: str | Path) -> dict:
    """Per-action accuracy of an outcome table written by `collect` (whole file, all runs)."""
    path = Path(table_path)
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    actions: list[str] = []
    for r in items:
        for a in r.get("outcomes", {}):
            if a not in actions:
                actions.append(a)
    acc = {a: (sum(r["outcomes"].get(a, 0) for r in items) / len(items) if items else 0.0) for a in actions}
    unmatched = {a: sum(1 for r in items if r.get("predictions", {}).get(a, {}).get("matched_by") == "none")
                 for a in actions}
    oracle = (sum(1 for r in items if any(r["outcomes"].values())) / len(items)) if items else 0.0
    return {"rows": len(items), "actions": actions, "accuracy": acc, "unmatched": unmatched, "oracle": oracle}


# Keys `batch` adds to each dataset row. MMAU's evaluation.py reads `model_prediction` (older
# releases: `model_output`), MMAR's reads `answer_prediction`: all three carry the same text.
PREDICTION_KEYS = ("model_output", "model_prediction", "answer_prediction")


def batch(dataset: Dataset, router, reasoner, out: str | Path, *, router_name: str = "default",
          use_cache: bool = True, max_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
          chunk_size: int = DEFAULT_CHUNK, on_row: Callable[[dict], None] | None = None
          ) -> tuple[RunSummary, list[dict]]:
    """Routed predictions for a benchmark, resumable through `<out>.partial.jsonl`.

    Questions go `chunk_size` at a time: route + tool for each (CPU, in order), then the chunk's
    reasoner requests together (the back-end's concurrency / batching), then the rows are
    appended in dataset order. Returns (summary, final rows in dataset order); the final JSON list
    is written atomically only when every row has been handled (error rows included).
    """
    from reasoner.errors import ReasonerUnavailable
    from toolcache.errors import ToolcacheError

    if chunk_size < 1:
        raise ValueError(f"--concurrency must be >= 1 (got {chunk_size})")
    out = Path(out)
    check_router_tools(router)
    cache = AnswerCache(reasoner, enabled=use_cache)
    run_id = {"reasoner": identity_digest(cache.identity), "router": router_fingerprint(router, router_name)}
    summary = RunSummary(total=len(dataset))
    guard = FailureGuard(max_failures)
    sidecar = partial_path(out)
    results: dict[str, dict] = {}
    with JsonlAppender(sidecar) as part:
        for r in part.rows:
            if r.get("_run") != run_id:
                raise PipelineError(
                    f"{sidecar} was written with another router/reasoner ({r.get('_run')} != {run_id}); "
                    "delete it or choose another --out to start over")
            results[r["id"]] = r
        pending = []
        for q in dataset.questions:
            prev = results.get(q.id)
            if prev is not None and "error" not in prev:
                summary.skipped_done += 1
            else:
                pending.append(q)
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start:start + chunk_size]
            # 1. audio check, routing and the chosen tool, per question (no reasoner yet)
            staged: list[tuple[Question, str | None, dict | None, str | None]] = []
            for q in chunk:
                sha, err = _audio_or_error(q)
                doc = None
                if err is None:
                    try:
                        doc = route_question(router, q.question, q.choices, q.audio, router_name=router_name,
                                             use_cache=use_cache, audio_sha256=sha)
                    except ToolcacheError as exc:
                        err = f"row {q.id}: {exc}"
                staged.append((q, sha, doc, err))
            # 2. the chunk's reasoner requests together; cache hits never reach the server
            asks = [(q.audio, sha, q.question, q.choices, doc["evidence"]) for q, sha, doc, err in staged if err is None]
            t0 = time.perf_counter()
            answers = iter(cache.answer_many(asks)) if asks else iter(())
            share_ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(asks))
            # 3. rows in dataset order, each flushed + fsync'd before the next
            for q, sha, doc, err in staged:
                failure: BaseException | None = None
                if err is None:
                    ans = next(answers)
                    if isinstance(ans, ReasonerUnavailable):
                        err, failure = f"row {q.id}: {ans}", ans
                    elif isinstance(ans, BaseException):
                        raise ans  # bad configuration (4xx, unknown model): stop; rows so far are kept
                    else:
                        if not ans.get("cached"):
                            guard.ok()
                        doc["answer"] = ans
                        doc["timings"]["reasoner_ms"] = round(share_ms, 3)
                        doc["timings"]["total_ms"] = round(doc["timings"]["total_ms"] + share_ms, 3)
                if err is not None:
                    record = dict(q.row)
                    record.update({k: "" for k in PREDICTION_KEYS})
                    record["error"] = " ".join(err.split())
                    summary.errors += 1
                else:
                    record = _prediction_row(q, doc)
                    if record.get("matched_by") == "none":
                        summary.unmatched["routed"] = summary.unmatched.get("routed", 0) + 1
                record["_run"] = run_id
                summary.processed += 1
                part.write(record)
                results[q.id] = record
                if on_row is not None:
                    on_row(record)
                if failure is not None:
                    guard.failed(failure)  # raises (ends the run) when the server looks down
    summary.server_calls, summary.cache_hits = cache.misses, cache.hits
    final = []
    for q in dataset.questions:
        r = dict(results[q.id])
        r.pop("_run", None)
        final.append(r)
    write_json_atomic(out, final)
    return summary, final


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def router_fingerprint(router, router_name: str) -> str:
    meta = getattr(router, "meta", None) or {}
    files = meta.get("files") or {}
    blob = json.dumps({"actions": list(router.actions), "files": files, "name": router_name if not files else ""},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prediction_row(q: Question, doc: Mapping[str, Any]) -> dict:
    ans = doc["answer"]
    text = ans.get("choice") if ans.get("choice") is not None else (ans.get("raw") or "")
    row = dict(q.row)
    for k in PREDICTION_KEYS:
        row[k] = text
    ev = doc["evidence"]
    row.update({
        "route_action": doc["routing"]["action"],
        "route_probs": doc["routing"]["probs"],
        "tool_called": ev is not None,
        "raw_answer": ans.get("raw"),
        "matched_by": ans.get("matched_by"),
        "reasoner_model": ans.get("model"),
        "correct": None if q.answer is None else is_correct(ans.get("choice"), q.answer),
    })
    return row


def batch_report(dataset: Dataset, rows: Sequence[Mapping[str, Any]]) -> dict:
    """Our own accuracy table: overall and per task/category, tool-call rate, errors, unmatched."""
    by_id = {q.id: q for q in dataset.questions}
    groups: dict[str, list[int]] = {}
    scored, correct, calls, answered, errors, unmatched = 0, 0, 0, 0, 0, 0
    for r in rows:
        if r.get("error"):
            errors += 1
            continue
        answered += 1
        calls += int(bool(r.get("tool_called")))
        unmatched += int(r.get("matched_by") == "none")
        q = by_id.get(str(r.get("id")))
        if q is None or q.answer is None or r.get("correct") is None:
            continue
        scored += 1
        correct += int(bool(r["correct"]))
        groups.setdefault(q.group or "(none)", []).append(int(bool(r["correct"])))
    return {
        "rows": len(rows), "answered": answered, "errors": errors, "unmatched": unmatched,
        "scored": scored, "accuracy": (correct / scored) if scored else None,
        "per_group": {g: {"n": len(v), "accuracy": sum(v) / len(v)} for g, v in sorted(groups.items())},
        "tool_call_rate": (calls / answered) if answered else None,
    }
