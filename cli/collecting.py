"""The resumable loop behind `collect`: the reasoner directly and with each tool's evidence on
every question -> an outcome table (JSONL) to train a router on.

Rows are appended one by one (flush + fsync), a re-run skips ids already written, and reasoner
answers come from the cache in the toolcache SQLite file, so a re-run does not ask the server again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cli.datasets import Dataset, Question
from cli.pipeline import AnswerCache, PipelineError, identity_digest, run_tools
from cli.resumable import (DEFAULT_CHUNK, DEFAULT_MAX_CONSECUTIVE_FAILURES, FailureGuard, JsonlAppender,
                           RunSummary, audio_or_error, is_correct)


def _error_row(q: Question, message: str) -> dict:
    return {"id": q.id, "question": q.question, "choices": list(q.choices), "audio": q.audio,
            "error": " ".join(str(message).split())}


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
