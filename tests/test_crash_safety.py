"""Crash safety under real kills: real subprocesses, real SIGKILL / SIGINT, the real loopback
OpenAI-compatible server (tests/openai_server.py), real Whisper ASR and the real SQLite cache.

- `write_json_atomic` SIGKILLed between writing the temp file and the rename (and at the fsync
  before it): the previous file is intact.
- the `batch` sidecar / the `collect` table SIGKILLed *inside* a row write (half the line on disk,
  then the kill): the torn line is dropped, every complete row is kept, the re-run completes it
  without asking the server again (answers are in the SQLite answer cache).
- a running `collect` SIGKILLed while a chunk is in flight: the re-run re-asks at most that chunk.
- SIGINT of a running `batch` / `collect`: exit 130, one `error: interrupted ...` line, rows kept.

The kill points are test-only hooks injected into the child process (`python -c` wrapping the
public entry point), never into the library.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from openai_server import OpenAITestServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "audio"
runner = CliRunner()
SPEECH, BIRDS = "speech-two-speakers.wav", "birds-10s.wav"

# Rows whose answers the server can give: option named in the tool evidence, else option A.
ROWS = [
    {"id": "s1", "audio": SPEECH, "task": "speech", "question": "What city does the second speaker say she is originally from?",
     "choices": ["Boston", "Chicago", "Dallas", "Denver"], "answer": "Chicago"},
    {"id": "s2", "audio": SPEECH, "task": "speech", "question": "Which state does the first speaker say she lives in now?",
     "choices": ["Ohio", "New Jersey", "Utah", "Oregon"], "answer": "New Jersey"},
    {"id": "b1", "audio": BIRDS, "task": "sound", "question": "Which animal makes the sound in the recording?",
     "choices": ["Bird", "Dog", "Cow", "Frog"], "answer": "Bird"},
    {"id": "s3", "audio": SPEECH, "task": "speech", "question": "How many people are talking in the call?",
     "choices": ["One", "Two", "Three", "Four"], "answer": "Two"},
    {"id": "b2", "audio": BIRDS, "task": "sound", "question": "Is the recording made indoors or outdoors?",
     "choices": ["Outdoors", "Indoors"], "answer": "Outdoors"},
    {"id": "s4", "audio": SPEECH, "task": "speech", "question": "What is the first speaker's name?",
     "choices": ["Sheila", "Maria", "Anna", "Julie"], "answer": "Sheila"},
    {"id": "b3", "audio": BIRDS, "task": "sound", "question": "What is the loudest sound source?",
     "choices": ["Birdsong", "Traffic", "Rain", "Music"], "answer": "Birdsong"},
    {"id": "s5", "audio": SPEECH, "task": "speech", "question": "Is the conversation on the phone or in person?",
     "choices": ["Phone", "In person"], "answer": "Phone"},
]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _env() -> dict:
    # the child uses the test's own cache folder (conftest sets AUDIOROUTER_CACHE_DIR) and this repo
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))


def _cli_args(command: str, ds: Path, out: Path, server, *extra: str) -> list[str]:
    args = [command, str(ds), "--out", str(out), "--audio-root", str(EXAMPLES),
            "--reasoner-url", server.url, "--model", server.model]
    if command == "collect":
        args += ["--tools", "asr"]
    return [*args, *extra]


def _target(command: str, out: Path) -> Path:
    """The file a command appends its rows to (batch: the sidecar; collect: the table itself)."""
    return Path(str(out) + ".partial.jsonl") if command == "batch" else out


# The CLI as a terminal runs it: SIGINT raises KeyboardInterrupt. A child inherits an *ignored*
# SIGINT from a parent started in the background (`cmd &` in a script, nohup), and Python then
# keeps ignoring it; the wrapper restores the default handler so the test does not depend on that.
CLI_CHILD = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from cli.main import app; app(sys.argv[1:], prog_name='audiorouter')")


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the child ended (rc {proc.returncode}) before {what}: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _finished_rows(command: str, out: Path) -> list[dict]:
    """Rows of a finished run: batch's final JSON list (its sidecar may be gone), collect's table."""
    return json.loads(out.read_text()) if command == "batch" else _lines(out)


def _complete_rows(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


# ---------------------------------------------------------------------------------------------
# write_json_atomic: SIGKILL between the write and the rename
# ---------------------------------------------------------------------------------------------

ATOMIC_CHILD = textwrap.dedent("""
    import os, signal, sys
    from cli.resumable import write_json_atomic

    path, where = sys.argv[1], sys.argv[2]
    write_json_atomic(path, {"version": 1, "rows": list(range(1000))})

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(os, where, die)  # the next fsync / rename of the process is where it dies
    write_json_atomic(path, {"version": 2, "rows": list(range(200000))})
    print("survived")
""")


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_write_json_atomic_killed_before_the_rename_keeps_the_previous_file(tmp_path, where):
    from cli.resumable import write_json_atomic

    path = tmp_path / "pred.json"
    proc = subprocess.run([sys.executable, "-c", ATOMIC_CHILD, str(path), where], cwd=REPO, env=_env(),
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr.decode()[-2000:])
    assert json.loads(path.read_text()) == {"version": 1, "rows": list(range(1000))}  # whole, previous
    # the folder stays usable: the next write replaces the file
    write_json_atomic(path, {"version": 3})
    assert json.loads(path.read_text()) == {"version": 3}


FINAL_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    out, where, argv = Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3:]
    real_fsync, real_replace = os.fsync, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def fsync(fd):
        # the fsync of the final file's bytes: of `out` itself or of a temp file named after it
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if where == "fsync" and (name == out.name or name.startswith("." + out.name + ".")):
            die()
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        if where == "replace" and Path(dst).resolve() == out:
            die()
        return real_replace(src, dst, *args, **kwargs)

    os.fsync, os.replace = fsync, replace
    from cli.main import app
    app(argv, prog_name="audiorouter")
""")


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_batch_killed_while_writing_the_final_file_keeps_the_previous_one(tmp_path, where):
    """`batch` writes its final JSON last; a kill there leaves the previous run's file whole."""
    out = tmp_path / "pred.json"
    with OpenAITestServer() as server:
        ds = _write_jsonl(tmp_path / "q.jsonl", ROWS[:2])
        res = runner.invoke(app, _cli_args("batch", ds, out, server, "--json"), catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
        previous = out.read_bytes()
        assert [p["id"] for p in json.loads(previous)] == ["s1", "s2"]

        _write_jsonl(ds, ROWS[:3])  # one more question: the next final file differs
        proc = subprocess.run([sys.executable, "-c", FINAL_CHILD, str(out), where, *_cli_args("batch", ds, out, server)],
                              cwd=REPO, env=_env(), capture_output=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        assert out.read_bytes() == previous  # byte for byte the previous run's file
        assert len(_lines(_target("batch", out))) == 3  # the new row is in the sidecar, not lost

        res = runner.invoke(app, _cli_args("batch", ds, out, server, "--json"), catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
    assert [p["id"] for p in json.loads(out.read_text())] == ["s1", "s2", "b1"]


# ---------------------------------------------------------------------------------------------
# batch sidecar / collect table: SIGKILL inside a row write (half the line reached the disk)
# ---------------------------------------------------------------------------------------------

TORN_CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import cli.resumable as resumable

    target, kill_at, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    calls = {"n": 0}
    real_write = resumable.JsonlAppender.write

    def torn_write(self, row):
        if Path(self.path) != target:
            return real_write(self, row)
        calls["n"] += 1
        if calls["n"] < kill_at:
            return real_write(self, row)
        line = (json.dumps(row, ensure_ascii=False) + "\\n").encode("utf-8")
        with open(self.path, "ab") as fh:  # half the row is on disk when the process dies
            fh.write(line[: len(line) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    resumable.JsonlAppender.write = torn_write
    from cli.main import app
    app(argv, prog_name="audiorouter")
""")


@pytest.mark.parametrize("command", ["batch", "collect"])
def test_kill_inside_a_row_write_keeps_every_complete_row_and_resumes(tmp_path, command):
    rows = ROWS[:3]
    ds = _write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / ("pred.json" if command == "batch" else "outcomes.jsonl")
    target = _target(command, out)
    with OpenAITestServer() as server:
        args = _cli_args(command, ds, out, server)
        proc = subprocess.run([sys.executable, "-c", TORN_CHILD, str(target), "2", *args], cwd=REPO, env=_env(),
                              capture_output=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        raw = target.read_bytes()
        assert raw.count(b"\n") == 1 and not raw.endswith(b"\n")  # one whole row + a torn one
        first = json.loads(raw.split(b"\n")[0])
        assert first["id"] == rows[0]["id"]
        asked = server.request_count
        assert asked == len(rows) * (1 if command == "batch" else 2)  # the whole chunk was answered

        res = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
        # the chunk's answers were stored in the SQLite cache before the rows: nothing is asked again
        assert server.request_count == asked
    got = _finished_rows(command, out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]  # torn row dropped, then rewritten once
    # the complete row is taken as written (every field it had keeps its value)
    same = {k: got[0].get(k) == v for k, v in first.items() if k in got[0]}
    assert {"id", "question"} <= set(same) and all(same.values()), same
    if command == "batch":
        assert not list(tmp_path.glob(".pred.json.tmp*"))


# ---------------------------------------------------------------------------------------------
# a running collect, SIGKILLed while a chunk is in flight
# ---------------------------------------------------------------------------------------------

def test_collect_killed_mid_run_resumes_re_asking_at_most_one_chunk(tmp_path):
    chunk = 2                      # --concurrency: questions per chunk
    per_q = 2                      # direct + asr requests per question
    ds = _write_jsonl(tmp_path / "q.jsonl", ROWS)
    out = tmp_path / "outcomes.jsonl"
    with OpenAITestServer(delay_s=0.4) as server:  # each reply takes 0.4 s: the kill lands mid-chunk
        args = _cli_args("collect", ds, out, server, "--concurrency", str(chunk))
        proc = subprocess.Popen([sys.executable, "-c", CLI_CHILD, *args], cwd=REPO, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # at least one chunk written, and the next chunk's requests already at the server
            _wait_for(lambda: _complete_rows(out) >= chunk
                      and server.request_count > _complete_rows(out) * per_q, proc, "a chunk in flight")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        before = _lines(out)  # every line complete (rows are written whole, one by one)
        assert chunk <= len(before) < len(ROWS)
        asked_before = server.request_count

        server.delay_s = 0.0
        res = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
        summary = json.loads(res.stdout)
        total = server.request_count
    after = _lines(out)
    assert [r["id"] for r in after] == [r["id"] for r in ROWS]  # each question exactly once, in order
    assert after[:len(before)] == before  # rows written before the kill are kept as written
    assert summary["skipped_done"] == len(before)
    needed = len(ROWS) * per_q
    assert total - needed <= chunk * per_q, (asked_before, total)  # at most the chunk in flight re-asked
    assert total - asked_before <= (len(ROWS) - len(before)) * per_q  # done rows are never re-asked


# ---------------------------------------------------------------------------------------------
# SIGINT: exit 130 (README), one line, rows kept, re-run resumes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["batch", "collect"])
def test_sigint_exits_130_with_one_line_and_keeps_rows(tmp_path, command):
    rows = ROWS[:5]
    ds = _write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / ("pred.json" if command == "batch" else "outcomes.jsonl")
    target = _target(command, out)
    with OpenAITestServer(delay_s=0.8) as server:
        args = _cli_args(command, ds, out, server, "--concurrency", "1")
        proc = subprocess.Popen([sys.executable, "-c", CLI_CHILD, *args], cwd=REPO, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: _complete_rows(target) >= 1, proc, "the first row")
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = stderr.decode()
        assert proc.returncode == 130, err[-2000:]
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: interrupted"), err[-2000:]
        kept = _lines(target)  # every line is whole JSON
        assert 1 <= len(kept) < len(rows)
        assert not out.exists() or command == "collect"  # batch writes the final file only at the end

        server.delay_s = 0.0
        res = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["skipped_done"] == len(kept)
    assert [r["id"] for r in _finished_rows(command, out)] == [r["id"] for r in rows]
