"""The resumable loop behind `batch`: routed predictions for a benchmark (MMAU / MMAR keys).

Streaming: rows are appended to `<out>.partial.jsonl` as they complete (flush + fsync) and are not
kept in memory (only each id's byte offset in that file); a re-run skips ids already answered; the
final JSON list is written row by row into a temp file renamed over `<out>` once every row has
been handled, the accuracy report is counted on the way, and the sidecar is then removed. Each
row carries `audiorouter_run` (router and reasoner fingerprints), so a finished `<out>` is resumed
(0 requests) by the same configuration and refused, with what differs, by another one.
Questions are routed a chunk at a time with `Router.route_batch` (one ONNX call per chunk for
batch-invariant routers; the decisions equal `route`'s either way).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from cli.datasets import Dataset, Question
from cli.errors import mask_secrets
from cli.pipeline import AnswerCache, PipelineError, check_router_tools, identity_digest, route_question
from cli.resumable import (DEFAULT_CHUNK, DEFAULT_MAX_CONSECUTIVE_FAILURES, FailureGuard, JsonListWriter,
                           JsonlAppender, RunSummary, audio_or_error, is_correct, iter_json_list)

# Keys `batch` adds to each dataset row. MMAU's evaluation.py reads `model_prediction` (older
# releases: `model_output`), MMAR's reads `answer_prediction`: all three carry the same text.
PREDICTION_KEYS = ("model_output", "model_prediction", "answer_prediction")
RUN_KEY = "audiorouter_run"  # {"router", "router_name", "reasoner", "reasoner_name"} on every row


def batch(dataset: Dataset, router, reasoner, out: str | Path, *, router_name: str = "default",
          use_cache: bool = True, max_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
          chunk_size: int = DEFAULT_CHUNK, on_row: Callable[[dict], None] | None = None,
          answer_cache: AnswerCache | None = None) -> tuple[RunSummary, dict]:
    """Routed predictions for a benchmark, resumable through `<out>.partial.jsonl`.

    Questions go `chunk_size` at a time: routing of the whole chunk (route_batch), the chosen tool
    per question (CPU, in order), then the chunk's reasoner requests together (the back-end's
    concurrency / batching), then the rows are appended in dataset order. Returns (summary,
    accuracy report of the final rows, see `BatchReport`); the final JSON list is written
    atomically only when every row has been handled (error rows included).
    """
    from reasoner.errors import ReasonerUnavailable

    if chunk_size < 1:
        raise ValueError(f"--concurrency must be >= 1 (got {chunk_size})")
    out = Path(out)
    check_router_tools(router)
    cache = answer_cache or AnswerCache(reasoner, enabled=use_cache)  # asks the server who it is
    run = {"router": router_fingerprint(router, router_name), "router_name": router_name,
           "reasoner": identity_digest(cache.identity), "reasoner_name": _reasoner_name(cache.identity)}
    summary = RunSummary(total=len(dataset))
    guard = FailureGuard(max_failures)
    sidecar = partial_path(out)
    offsets: dict[str, int] = {}   # id -> byte offset of its latest row in the sidecar (no rows in memory)
    done: set[str] = set()
    if out.exists() and not sidecar.exists():
        _reopen_finished(out, sidecar, run)
    with JsonlAppender(sidecar, keep_rows=False) as part:
        for offset, r in part.iter_rows():
            _check_run(r.get(RUN_KEY) or r.get("_run"), run, sidecar, out)
            qid = str(r.get("id"))
            offsets[qid] = offset
            if "error" in r:
                done.discard(qid)
            else:
                done.add(qid)
        pending = [q for q in dataset.questions if q.id not in done]
        summary.skipped_done = len(dataset) - len(pending)
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start:start + chunk_size]
            # 1. audio check per question, then the chunk's routing in one batched call, then tools
            checked = [(q, *audio_or_error(q)) for q in chunk]
            routed = _route_chunk(router, [q for q, _, err in checked if err is None])
            staged = [_stage(q, sha, err, routed, router, router_name, use_cache) for q, sha, err in checked]
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
                    record["error"] = mask_secrets(" ".join(err.split()))
                    summary.errors += 1
                else:
                    record = _prediction_row(q, doc)
                    if record.get("matched_by") == "none":
                        summary.unmatched["routed"] = summary.unmatched.get("routed", 0) + 1
                record[RUN_KEY] = run
                summary.processed += 1
                offsets[q.id] = part.write(record)
                if on_row is not None:
                    on_row(record)
                if failure is not None:
                    guard.failed(failure)  # raises (ends the run) when the server looks down
        summary.server_calls, summary.cache_hits = cache.misses, cache.hits
        report = BatchReport(dataset)
        final = JsonListWriter(out)
        try:
            for q in dataset.questions:
                row = part.read_at(offsets[q.id])
                row.pop("_run", None)
                final.write(row)
                report.add(row)
            final.commit()
        except BaseException:
            final.abort()
            raise
    sidecar.unlink(missing_ok=True)  # everything is in <out> now (and <out> resumes by itself)
    summary.cache_note = cache.served_from_cache_note()
    return summary, report.result()


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def router_fingerprint(router, router_name: str) -> str:
    meta = getattr(router, "meta", None) or {}
    files = meta.get("files") or {}
    blob = json.dumps({"actions": list(router.actions), "files": files, "name": router_name if not files else ""},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reasoner_name(identity: Mapping[str, Any]) -> str:
    """A readable name of the reasoner configuration for messages: backend/model @ server."""
    name = "/".join(str(identity[k]) for k in ("backend", "model") if identity.get(k)) or "reasoner"
    if identity.get("server"):
        name += f" at {identity['server']}"
    return name


def _check_run(found: Any, run: Mapping[str, str], where: Path, out: Path) -> None:
    """PipelineError naming what differs (router / reasoner) between `found` and this run."""
    if isinstance(found, Mapping) and found.get("router") == run["router"] and found.get("reasoner") == run["reasoner"]:
        return
    if not isinstance(found, Mapping):  # a sidecar of an older version, or a file not written by batch
        raise PipelineError(f"{where} was not written by this version of `audiorouter batch` (no run record); "
                            f"choose another --out, or delete {where} to start over")
    differs = []
    if found.get("router") != run["router"]:
        differs.append(f"router {found.get('router_name', '?')} ({found.get('router')}) there, "
                       f"{run['router_name']} ({run['router']}) now")
    if found.get("reasoner") != run["reasoner"]:
        differs.append(f"reasoner {found.get('reasoner_name', '?')} ({found.get('reasoner')}) there, "
                       f"{run['reasoner_name']} ({run['reasoner']}) now")
    what = "a finished batch" if where == out else "an unfinished batch"
    raise PipelineError(f"{where} holds {what} made with another configuration: {'; '.join(differs)}; "
                        f"choose another --out to keep both, or delete {where} to redo it with this one")


def _reopen_finished(out: Path, sidecar: Path, run: Mapping[str, str]) -> None:
    """A finished <out> of the same run becomes the sidecar again (streamed, row by row), so the
    loop resumes it: answered rows are skipped, error rows retried. Another run's <out> is refused."""
    rows = iter_json_list(out)
    first = next(rows, None)
    if first is None:
        return
    if not isinstance(first, dict):
        raise PipelineError(f"{out} is not a batch predictions file; choose another --out or delete it")
    _check_run(first.get(RUN_KEY), run, out, out)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    with JsonlAppender(tmp, keep_rows=False) as part:
        part.write(first)
        for row in rows:
            if isinstance(row, dict):
                _check_run(row.get(RUN_KEY), run, out, out)
                part.write(row)
    tmp.replace(sidecar)


def _route_chunk(router, questions: list[Question]) -> dict[str, dict]:
    """id -> router result for a chunk, one batched ONNX call; one by one if the batch fails (a bad
    question then fails alone, as an error row)."""
    from textrouter.errors import RouterError

    if not questions:
        return {}
    try:
        # equal to route() whatever the chunk (the runtime batches only batch-invariant routers)
        results = router.route_batch([{"question": q.question, "choices": list(q.choices) or None}
                                      for q in questions])
        return {q.id: r for q, r in zip(questions, results)}
    except RouterError:
        routed = {}
        for q in questions:
            try:
                routed[q.id] = router.route(q.question, list(q.choices) or None)
            except RouterError as exc:
                routed[q.id] = exc
        return routed


def _stage(q: Question, sha: str | None, err: str | None, routed: Mapping[str, Any], router,
           router_name: str, use_cache: bool) -> tuple[Question, str | None, dict | None, str | None]:
    """(question, audio sha256, route document without answer, error) for one question."""
    from textrouter.errors import RouterError
    from toolcache.errors import ToolcacheError

    if err is not None:
        return q, sha, None, err
    result = routed.get(q.id)
    if isinstance(result, RouterError):
        return q, sha, None, f"row {q.id}: {result}"
    try:
        doc = route_question(router, q.question, q.choices, q.audio, router_name=router_name,
                             use_cache=use_cache, audio_sha256=sha, routed=result)
    except ToolcacheError as exc:
        return q, sha, None, f"row {q.id}: {exc}"
    return q, sha, doc, None


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
        "reasoner_cached": bool(ans.get("cached")),
        "correct": None if q.answer is None else is_correct(ans.get("choice"), q.answer),
    })
    return row


class BatchReport:
    """Our own accuracy table, counted row by row: overall and per task/category, tool-call rate,
    errors, unmatched. Error rows are not in n (no answer to score): `errors` says how many."""

    def __init__(self, dataset: Dataset) -> None:
        self._by_id = {q.id: q for q in dataset.questions}
        self.groups: dict[str, list[int]] = {}
        self.rows = self.scored = self.correct = self.calls = self.answered = 0
        self.errors = self.unmatched = self.unscored = 0

    def add(self, r: Mapping[str, Any]) -> None:
        self.rows += 1
        if r.get("error"):
            self.errors += 1
            return
        self.answered += 1
        self.calls += int(bool(r.get("tool_called")))
        self.unmatched += int(r.get("matched_by") == "none")
        q = self._by_id.get(str(r.get("id")))
        if q is None or q.answer is None or r.get("correct") is None:
            self.unscored += 1
            return
        self.scored += 1
        self.correct += int(bool(r["correct"]))
        self.groups.setdefault(q.group or "(none)", []).append(int(bool(r["correct"])))

    def result(self) -> dict:
        return {
            "rows": self.rows, "answered": self.answered, "errors": self.errors, "unmatched": self.unmatched,
            "scored": self.scored, "accuracy": (self.correct / self.scored) if self.scored else None,
            # rows left out of `scored`: error rows (no answer) and answered rows without a key
            "not_counted": {"errors": self.errors, "no_answer_key": self.unscored},
            "per_group": {g: {"n": len(v), "accuracy": sum(v) / len(v)} for g, v in sorted(self.groups.items())},
            "tool_call_rate": (self.calls / self.answered) if self.answered else None,
        }


def batch_report(dataset: Dataset, rows) -> dict:
    """The BatchReport of an iterable of final rows (e.g. a predictions file read back)."""
    report = BatchReport(dataset)
    for r in rows:
        report.add(r)
    return report.result()
