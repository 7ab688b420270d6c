"""The resumable loop behind `collect`: the reasoner directly and with each tool's evidence on
every question -> an outcome table (JSONL) to train a router on.

Streaming: rows are appended as they complete (flush + fsync) and not kept in memory (a re-run
reads the table line by line and keeps only the ids already written, which it skips); reasoner
answers come from the cache in the toolcache SQLite file, so a re-run does not ask the server again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cli.datasets import Dataset, Question
from cli.errors import mask_secrets
from cli.pipeline import AnswerCache, PipelineError, identity_digest, run_tools
from cli.resumable import (DEFAULT_CHUNK, DEFAULT_MAX_CONSECUTIVE_FAILURES, FailureGuard, JsonlAppender,
                           RunSummary, audio_or_error, is_correct)


def _error_row(q: Question, message: str) -> dict:
    return {"id": q.id, "question": q.question, "choices": list(q.choices), "audio": q.audio,
            "error": mask_secrets(" ".join(str(message).split()))}


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
    with JsonlAppender(out, keep_rows=False) as table, \
            JsonlAppender(out.with_name(out.name + ".errors.jsonl"), keep_rows=False) as errs:
        done: set[str] = set()
        for _, row in table.iter_rows():
            if row.get("reasoner") is not None and row.get("reasoner") != rid:
                raise PipelineError(
                    f"{out} was collected with another reasoner configuration (reasoner id {row.get('reasoner')} "
                    f"there, {rid} now: {cache.label} at {cache.identity.get('server', 'a local model')}); "
                    "write to a new --out file or delete the old one")
            have = set(row.get("outcomes", {}))
            if not set(actions) <= have:
                raise PipelineError(
                    f"{out} holds rows without outcomes for {', '.join(sorted(set(actions) - have))}; "
                    "write to a new --out file to collect another tool set")
            if "id" in row:
                done.add(row["id"])
        pending = [q for q in dataset.questions if q.id not in done]
        summary.skipped_done = len(dataset) - len(pending)
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start:start + chunk_size]
            # 1. audio check + every tool, per question (one decode per clip for all tools)
            staged: list[tuple[Question, str | None, dict | None, str | None]] = []
            for q in chunk:
                sha, err = audio_or_error(q)
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
    summary.cache_note = cache.served_from_cache_note()
    return summary


def collect_report(table_path: str | Path) -> dict:
    """Per-action accuracy of an outcome table written by `collect` (whole file, all runs), read
    line by line: counts only, no rows held."""
    path = Path(table_path)
    rows = 0
    right: dict[str, int] = {}
    unmatched: dict[str, int] = {}
    oracle = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            rows += 1
            outcomes = r.get("outcomes", {})
            for a, v in outcomes.items():
                right[a] = right.get(a, 0) + int(v)
                unmatched.setdefault(a, 0)
            for a, p in (r.get("predictions") or {}).items():
                if isinstance(p, dict) and p.get("matched_by") == "none":
                    unmatched[a] = unmatched.get(a, 0) + 1
            oracle += int(any(outcomes.values()))
    actions = list(right)
    return {"rows": rows, "actions": actions,
            "accuracy": {a: (right[a] / rows if rows else 0.0) for a in actions},
            "unmatched": {a: unmatched.get(a, 0) for a in actions},
            "oracle": (oracle / rows) if rows else 0.0}
