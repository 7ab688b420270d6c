"""The resumable loop behind `batch`: routed predictions for a benchmark (MMAU / MMAR keys).

Rows are appended to `<out>.partial.jsonl` one by one (flush + fsync), a re-run skips ids already
answered, and the final JSON list is written atomically once every row has been handled.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cli.datasets import Dataset, Question
from cli.pipeline import AnswerCache, PipelineError, check_router_tools, identity_digest, route_question
from cli.resumable import (DEFAULT_CHUNK, DEFAULT_MAX_CONSECUTIVE_FAILURES, FailureGuard, JsonlAppender,
                           RunSummary, audio_or_error, is_correct, write_json_atomic)

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
                sha, err = audio_or_error(q)
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
