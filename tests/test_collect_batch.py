"""`collect` and `batch` against the real loopback OpenAI-compatible server, real tools and the real
SQLite cache: outcome tables `train` can read, resumable runs (SIGKILL mid-way), benchmark keys,
error rows, unmatched answers, timeouts and an unreachable server."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from openai_server import OpenAITestServer, default_policy, prompt_text_of

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "audio"
runner = CliRunner()

# Option A is always wrong where the transcript holds the answer: the server's policy answers A
# without evidence and the option named in the tool evidence with it, so `direct` is wrong and
# `asr` right exactly when the real Whisper transcript carries the answer.
ROWS = [
    {"id": "s1", "audio": "speech-two-speakers.wav", "task": "speech",
     "question": "What city does the second speaker say she is originally from?",
     "choices": ["Boston", "Chicago", "Dallas", "Denver"], "answer": "Chicago"},
    {"id": "s2", "audio": "speech-two-speakers.wav", "task": "speech",
     "question": "Which state does the first speaker say she lives in now?",
     "choices": ["Ohio", "New Jersey", "Utah", "Oregon"], "answer": "New Jersey"},
    {"id": "b1", "audio": "birds-10s.wav", "task": "sound",
     "question": "Which animal makes the sound in the recording?",
     "choices": ["Bird", "Dog", "Cow", "Frog"], "answer": "Bird"},
    {"id": "gone", "audio": "no-such-clip.wav", "task": "sound",
     "question": "What is heard?", "choices": ["a", "b"], "answer": "a"},
    {"id": "nochoices", "audio": "birds-10s.wav", "task": "sound", "question": "What is heard?", "answer": "x"},
]
ANSWERABLE = ["s1", "s2", "b1"]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mmau(rows):
    out = []
    for r in rows:
        m = {"id": r["id"], "audio_id": r["audio"], "question": r["question"], "answer": r["answer"],
             "dataset": "examples", "task": r["task"], "split": "test-mini", "category": "Perception",
             "sub-category": "demo", "difficulty": "easy"}
        if "choices" in r:
            m["choices"] = r["choices"]
        out.append(m)
    return out


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _one_line(err: str) -> str:
    err = err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------

def test_collect_writes_a_trainable_outcome_table_and_resumes_without_asking_again(tmp_path):
    from textrouter.table import ActionMapping, load_table

    ds = _write_jsonl(tmp_path / "questions.jsonl", ROWS)
    table = tmp_path / "outcomes.jsonl"
    with OpenAITestServer() as server:
        args = ["collect", str(ds), "--out", str(table), "--tools", "asr", "--audio-root", str(EXAMPLES),
                "--reasoner", "openai", "--reasoner-url", server.url, "--model", server.model]
        res = _invoke(*args, "--json")
        assert res.exit_code == 0, res.stderr
        summary = json.loads(res.stdout)
        assert server.request_count == 2 * len(ANSWERABLE)  # direct + asr per usable question
        assert summary["errors"] == 2 and summary["processed"] == len(ROWS)

        rows = [json.loads(x) for x in table.read_text().splitlines()]
        assert [r["id"] for r in rows] == ANSWERABLE
        by_id = {r["id"]: r for r in rows}
        assert by_id["s1"]["outcomes"] == {"direct": 0, "asr": 1}
        assert by_id["s2"]["outcomes"] == {"direct": 0, "asr": 1}
        assert by_id["b1"]["outcomes"]["direct"] == 1
        assert by_id["s1"]["predictions"]["asr"]["choice"] == "Chicago"
        assert by_id["s1"]["task"] == "speech"
        errors = [json.loads(x) for x in Path(str(table) + ".errors.jsonl").read_text().splitlines()]
        assert {e["id"] for e in errors} == {"gone", "nochoices"}
        assert all("\n" not in e["error"] for e in errors)
        assert "no-such-clip.wav" in next(e["error"] for e in errors if e["id"] == "gone")

        # `audiorouter train TABLE --direct direct --tool asr=asr` reads it
        t = load_table(table, ActionMapping.parse("direct", ["asr=asr"]))
        assert len(t) == 3 and t.columns == ["direct", "asr"]

        # re-run: done ids skipped, no request reaches the server
        res = _invoke(*args, "--json")
        assert res.exit_code == 0, res.stderr
        assert json.loads(res.stdout)["skipped_done"] == 3
        assert server.request_count == 2 * len(ANSWERABLE)
        assert len(table.read_text().splitlines()) == 3

        # a fresh table from the same questions: every answer comes from the SQLite answer cache
        res = _invoke(*[a if a != str(table) else str(tmp_path / "again.jsonl") for a in args], "--json")
        again = json.loads(res.stdout)
        assert again["reasoner_requests"] == 0 and again["reasoner_cache_hits"] == 2 * len(ANSWERABLE)
        assert server.request_count == 2 * len(ANSWERABLE)
        assert [json.loads(x)["outcomes"] for x in (tmp_path / "again.jsonl").read_text().splitlines()] == \
            [r["outcomes"] for r in rows]


def test_collect_counts_answers_that_match_no_choice(tmp_path):
    def vague(body):  # the reasoner rambles for the bird question
        text = prompt_text_of(body)
        return "I cannot tell from this clip." if "animal" in text else default_policy(body)

    ds = _write_jsonl(tmp_path / "q.jsonl", ROWS[:3])
    table = tmp_path / "t.jsonl"
    with OpenAITestServer(policy=vague, delay_s=0.3) as server:
        res = _invoke("collect", str(ds), "--out", str(table), "--tools", "asr", "--audio-root", str(EXAMPLES),
                      "--reasoner-url", server.url, "--model", server.model, "--json")
    assert res.exit_code == 0, res.stderr
    assert server.max_in_flight >= 2  # direct and asr (and the other questions) asked together
    doc = json.loads(res.stdout)
    assert doc["unmatched"] == {"direct": 1, "asr": 1}
    assert doc["table_report"]["unmatched"] == {"direct": 1, "asr": 1}
    b1 = [json.loads(x) for x in table.read_text().splitlines()][2]
    assert b1["predictions"]["direct"]["matched_by"] == "none" and b1["outcomes"]["direct"] == 0


def test_collect_needs_a_reasoner_and_known_tools(tmp_path):
    ds = _write_jsonl(tmp_path / "q.jsonl", ROWS[:1])
    res = _invoke("collect", str(ds), "--out", str(tmp_path / "t.jsonl"))
    assert res.exit_code == 2 and "--reasoner" in _one_line(res.stderr)
    res = _invoke("collect", str(ds), "--out", str(tmp_path / "t.jsonl"), "--tools", "asr,telepathy",
                  "--reasoner-url", "http://127.0.0.1:9/v1")
    assert res.exit_code == 2 and "telepathy" in _one_line(res.stderr)


# ---------------------------------------------------------------------------------------------
# batch
# ---------------------------------------------------------------------------------------------

def _batch_args(ds: Path, out: Path, server) -> list[str]:
    return ["batch", str(ds), "--out", str(out), "--audio-root", str(EXAMPLES),
            "--reasoner", "openai", "--reasoner-url", server.url, "--model", server.model]


def test_batch_killed_midway_resumes_without_recomputing_or_losing_rows(tmp_path):
    ds = tmp_path / "mmau.json"
    ds.write_text(json.dumps(_mmau(ROWS)))
    out = tmp_path / "pred.json"
    partial = Path(str(out) + ".partial.jsonl")
    # each reply takes 1.5 s so the kill lands between rows
    with OpenAITestServer(delay_s=1.5) as server:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *_batch_args(ds, out, server), "--concurrency", "1"],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if partial.exists() and len(partial.read_text().splitlines()) >= 2:
                    break
                if proc.poll() is not None:
                    pytest.fail(f"batch ended before the kill: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.05)
            else:
                pytest.fail("batch wrote fewer than 2 rows in 120 s")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()  # the final file appears only when every row is handled
        before = [json.loads(x) for x in partial.read_text().splitlines()]
        done_before = {r["id"] for r in before if not r.get("error")}
        assert done_before and done_before < set(ANSWERABLE)
        requests_before = server.request_count

        server.delay_s = 0.0
        res = _invoke(*_batch_args(ds, out, server), "--json")
        assert res.exit_code == 0, res.stderr
        summary = json.loads(res.stdout)
        remaining = len(set(ANSWERABLE) - done_before)
        new_requests = server.request_count - requests_before
        # the row in flight at the kill may already have its answer in the SQLite cache
        assert remaining - 1 <= new_requests <= remaining
        assert summary["skipped_done"] == len(done_before)

    preds = json.loads(out.read_text())
    assert [p["id"] for p in preds] == [r["id"] for r in ROWS]  # dataset order, nothing lost
    kept = {r["id"]: r for r in before if not r.get("error")}
    for p in preds:
        if p["id"] in kept:  # rows finished before the kill are taken as written, not recomputed
            assert p["model_output"] == kept[p["id"]]["model_output"]
    by_id = {p["id"]: p for p in preds}
    for qid in ANSWERABLE:
        p = by_id[qid]
        # MMAU's evaluation.py reads model_prediction (older: model_output); MMAR's answer_prediction
        assert p["model_output"] == p["model_prediction"] == p["answer_prediction"]
        assert p["model_output"] in p["choices"]
        assert p["route_action"] in ("direct", "asr") and set(p["route_probs"]) == {"direct", "asr"}
        assert p["tool_called"] == (p["route_action"] == "asr")
        assert p["raw_answer"] and p["matched_by"] != "none"
        assert p["sub-category"] == "demo"  # original keys kept
    for qid, right in (("s1", "Chicago"), ("s2", "New Jersey")):
        # the answer follows the routing: the transcript's option with ASR, option A without
        expected = right if by_id[qid]["route_action"] == "asr" else by_id[qid]["choices"][0]
        assert by_id[qid]["model_output"] == expected
        assert by_id[qid]["correct"] == (expected == right)
    assert "error" in by_id["gone"] and "no-such-clip.wav" in by_id["gone"]["error"]
    assert "error" in by_id["nochoices"]
    assert summary["report"]["errors"] == 2 and summary["report"]["scored"] == 3
    assert set(summary["report"]["per_group"]) == {"speech", "sound"}
    assert not list(tmp_path.glob(".pred.json.tmp*"))


def test_batch_mmar_jsonl_accuracy_table(tmp_path):
    rows = [{"id": r["id"], "audio_path": r["audio"], "question": r["question"], "choices": r["choices"],
             "answer": r["answer"], "modality": r["task"], "category": "Semantic" if r["task"] == "speech" else "Signal",
             "sub-category": "demo"} for r in ROWS[:3]]
    ds = _write_jsonl(tmp_path / "MMAR-meta.jsonl", rows)
    out = tmp_path / "mmar-pred.json"
    def vague(body):  # the reasoner rambles for the bird question
        return "Hard to say, maybe something else." if "animal" in prompt_text_of(body) else default_policy(body)

    with OpenAITestServer(policy=vague, delay_s=0.5) as server:  # slow replies: requests overlap
        res = _invoke(*_batch_args(ds, out, server))
    assert res.exit_code == 0, res.stderr
    assert server.max_in_flight >= 2  # the chunk's requests went out together, not one by one
    text = " ".join(res.stdout.split())
    assert "accuracy" in text and "Semantic" in text and "Signal" in text and "tool-call rate" in text
    assert "no choice matched │ 1" in text
    preds = json.loads(out.read_text())
    assert all("answer_prediction" in p and p["category"] in ("Semantic", "Signal") for p in preds)
    b1 = preds[2]
    # unmatched: recorded as such, the raw reply is the prediction (the benchmark scores it), not right
    assert b1["matched_by"] == "none" and b1["answer_prediction"] == "Hard to say, maybe something else."
    assert b1["correct"] is False


def test_batch_timeouts_record_error_rows_then_stop_after_consecutive_failures(tmp_path):
    ds = tmp_path / "mmau.json"
    ds.write_text(json.dumps(_mmau(ROWS[:3])))
    out = tmp_path / "pred.json"
    partial = Path(str(out) + ".partial.jsonl")
    with OpenAITestServer(default_fault="slow", slow_s=5.0) as server:
        res = _invoke(*_batch_args(ds, out, server), "--timeout", "0.3", "--retries", "0", "--max-failures", "2")
    assert res.exit_code == 3, res.stderr
    err = _one_line(res.stderr)
    assert "2 consecutive" in err and "127.0.0.1" in err
    written = [json.loads(x) for x in partial.read_text().splitlines()]
    assert [w["id"] for w in written] == ["s1", "s2"]  # both error rows kept (retried on re-run)
    assert all("time" in w["error"].lower() and w["model_output"] == "" for w in written)
    assert not out.exists()
    # the server recovers: the re-run retries the error row and finishes
    with OpenAITestServer() as server:
        res = _invoke(*_batch_args(ds, out, server), "--json")
        assert res.exit_code == 0, res.stderr
        assert server.request_count == 3
    assert [p.get("error") for p in json.loads(out.read_text())] == [None, None, None]


def test_batch_unreachable_reasoner_exits_3_with_the_url(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ds = tmp_path / "mmau.json"
    ds.write_text(json.dumps(_mmau(ROWS[:2])))
    res = _invoke("batch", str(ds), "--out", str(tmp_path / "p.json"), "--audio-root", str(EXAMPLES),
                  "--reasoner-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--retries", "0")
    assert res.exit_code == 3, res.stderr
    assert f"127.0.0.1:{port}" in _one_line(res.stderr)


def test_batch_refuses_a_sidecar_from_another_reasoner(tmp_path):
    ds = tmp_path / "mmau.json"
    ds.write_text(json.dumps(_mmau(ROWS[2:3])))
    out = tmp_path / "pred.json"
    with OpenAITestServer(models=("model-a", "model-b")) as server:
        args = ["batch", str(ds), "--out", str(out), "--audio-root", str(EXAMPLES), "--reasoner-url", server.url]
        assert _invoke(*args, "--model", "model-a").exit_code == 0
        res = _invoke(*args, "--model", "model-b")
    err = _one_line(res.stderr)
    assert res.exit_code == 2 and "another configuration" in err
    assert "model-a" in err and "model-b" in err and "--out" in err and "{" not in err


def test_finished_batch_removes_its_sidecar_resumes_and_names_what_differs(tmp_path):
    """Issue 12 item 20: the sidecar goes after success; a finished --out is resumed (0 requests)
    by the same configuration; another router gets one line naming both routers and the fix."""
    ds = tmp_path / "mmau.json"
    ds.write_text(json.dumps(_mmau(ROWS[2:3])))
    out = tmp_path / "pred.json"
    with OpenAITestServer() as server:
        assert _invoke(*_batch_args(ds, out, server)).exit_code == 0
        assert out.exists() and not Path(str(out) + ".partial.jsonl").exists()
        first = out.read_text()
        again = _invoke(*_batch_args(ds, out, server), "--json")
        assert again.exit_code == 0, again.stderr
        assert server.request_count == 1  # the finished file was resumed, not recomputed
        assert json.loads(again.stdout)["skipped_done"] == 1
        assert json.loads(out.read_text()) == json.loads(first)
        res = _invoke(*_batch_args(ds, out, server), "--router", "fast")
    err = _one_line(res.stderr)
    assert res.exit_code == 2
    assert "router default" in err and "fast" in err and "another --out" in err and f"delete {out}" in err
    assert "{" not in err and "'" not in err  # no raw dicts
    assert json.loads(out.read_text()) == json.loads(first)  # the finished file is untouched
