"""`audiorouter route` end to end on real audio with the bundled default router (real ONNX router,
real Whisper ASR, real SQLite cache) and, for the answer, the real loopback OpenAI-compatible server."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

# Questions about the recording ("I'm Sheila in Texas, originally from Chicago"), with the action
# each needs written by hand, not picked from what the router happens to output: the speech one
# asks for a word that is said (a transcript answers it), the direct one about music (no transcript
# can). Routing quality over a wider hand-written set is tests/test_routing_expectations.py; here a
# misrouted question fails with the decision, and the CLI is checked to do exactly what the
# decision implies.
SPEECH_CHOICES = "Boston|Chicago|Dallas|Denver"  # option A wrong: see the reasoner test
SPEECH_Q = ("What city does the second speaker say she is originally from?", SPEECH_CHOICES)
PLAIN_Q = "What is said in the recording?"  # for input errors: fails before any routing
DIRECT_CHOICES = "Jazz|Rock|Classical|Hip hop"
DIRECT_Q = ("What is the genre of the music?", DIRECT_CHOICES)

# Exit codes the README promises (cli/errors.py).
EXIT_BAD_INPUT, EXIT_PEER, EXIT_INTERRUPTED = 2, 3, 130


def expect_route(question_choices: tuple[str, str], action: str) -> tuple[str, str]:
    """The (question, "A|B|C") after checking the default router sends it to `action`."""
    import textrouter

    q, c = question_choices
    d = textrouter.load_router().route(q, c.split("|"))
    if d["action"] != action:
        pytest.fail(f"the default router sends {q!r} to {d['action']!r} (probs {d['probs']}), expected {action!r}")
    return q, c


@pytest.fixture(scope="module")
def speech_q() -> tuple[str, str]:
    return expect_route(SPEECH_Q, "asr")


@pytest.fixture(scope="module")
def direct_q() -> tuple[str, str]:
    return expect_route(DIRECT_Q, "direct")


runner = CliRunner()


def _route(*args: str):
    return runner.invoke(app, ["route", *args], catch_exceptions=False)


def _one_line_error(result, *fragments: str, code: int = EXIT_BAD_INPUT) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in err, err
    return err


def test_speech_question_routes_to_asr_with_evidence_then_hits_the_cache(speech_wav, speech_q):
    question, choices = speech_q
    first = _route(question, "--audio", str(speech_wav), "--choices", choices, "--json")
    assert first.exit_code == 0, first.stderr
    doc = json.loads(first.stdout)  # stdout is exactly one JSON document
    assert set(doc) >= {"question", "choices", "routing", "evidence", "answer", "timings"}
    assert doc["choices"] == choices.split("|") and doc["question"] == question
    r = doc["routing"]
    assert r["action"] == "asr" and r["router"] == "default"
    assert set(r["probs"]) == {"direct", "asr"} and abs(sum(r["probs"].values()) - 1.0) < 1e-5
    assert r["probs"]["asr"] > r["probs"]["direct"] and r["elapsed_ms"] > 0
    ev = doc["evidence"]
    assert ev["tool"] == "asr" and ev["cached"] is False
    assert {"tool_version", "backend", "audio_sha256", "params", "result", "limits", "audio", "elapsed_s"} <= set(ev)
    assert "chicago" in ev["result"]["text"].lower()  # real Whisper on the real recording
    assert doc["answer"] is None
    assert doc["timings"]["tool_ms"] > doc["timings"]["routing_ms"]

    second = _route(question, "--audio", str(speech_wav), "--choices", choices, "--json")
    doc2 = json.loads(second.stdout)
    assert doc2["evidence"]["cached"] is True
    assert doc2["evidence"]["result"] == ev["result"]
    assert doc2["timings"]["tool_ms"] < doc["timings"]["tool_ms"] / 10


def test_direct_question_runs_no_tool(speech_wav, direct_q):
    from toolcache import Cache

    question, choices = direct_q
    res = _route(question, "--audio", str(speech_wav), "--choices", choices, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["routing"]["action"] == "direct"
    assert doc["evidence"] is None and doc["timings"]["tool_ms"] == 0.0
    tool_rows = [t for t in Cache().stats()["by_tool"] if t["namespace"] == "tool"]
    assert tool_rows == []  # nothing computed, nothing stored


def test_human_output_says_how_to_add_a_reasoner(speech_wav, direct_q):
    question, choices = direct_q
    res = _route(question, "--audio", str(speech_wav), "--choices", choices)
    assert res.exit_code == 0, res.stderr
    assert "direct" in res.stdout and "no tool run" in res.stdout
    assert "--reasoner openai --reasoner-url" in " ".join(res.stdout.split())


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit 2, before any routing
# ---------------------------------------------------------------------------------------------

def test_missing_audio(tmp_path):
    _one_line_error(_route(PLAIN_Q, "--audio", str(tmp_path / "nope.wav")), "nope.wav", "not found")


def test_empty_audio(tmp_path):
    f = tmp_path / "empty.wav"
    f.write_bytes(b"")
    _one_line_error(_route(PLAIN_Q, "--audio", str(f)), "empty.wav", "empty")


def test_text_file_named_wav(tmp_path):
    f = tmp_path / "notes.wav"
    f.write_text("meeting notes, not audio\n" * 50)
    _one_line_error(_route(PLAIN_Q, "--audio", str(f)), "notes.wav", "decode")


def test_unknown_router_dir(tmp_path, speech_wav):
    res = _route(PLAIN_Q, "--audio", str(speech_wav), "--router", str(tmp_path / "no-router"))
    _one_line_error(res, "no-router")


def test_corrupt_router_json(tmp_path, speech_wav):
    import textrouter

    bad = tmp_path / "router"
    shutil.copytree(Path(textrouter.DEFAULT_ROUTER_DIR), bad)
    (bad / "router.json").write_text('{"format_version": 1, "actions": ["direct", ')
    res = _route(PLAIN_Q, "--audio", str(speech_wav), "--router", str(bad))
    _one_line_error(res, "router.json")


def test_bad_choices_and_precision(speech_wav):
    _one_line_error(_route(PLAIN_Q, "--audio", str(speech_wav), "--choices", "a||b"), "empty option")
    _one_line_error(_route(PLAIN_Q, "--audio", str(speech_wav), "--precision", "int4"), "int4")


def test_router_action_that_is_not_a_tool_fails_naming_both_registries(tmp_path, speech_wav):
    """A router exported with a tool action our toolcache lacks (e.g. a caption pipeline)."""
    import textrouter

    folder = tmp_path / "router"
    shutil.copytree(Path(textrouter.DEFAULT_ROUTER_DIR), folder)
    meta = json.loads((folder / "router.json").read_text())
    meta["actions"] = ["direct", "caption"]
    if meta.get("column_mapping"):  # keys must be the actions, in order (textrouter.folder checks it)
        meta["column_mapping"] = dict(zip(meta["actions"], meta["column_mapping"].values()))
    if meta.get("decision"):  # the decision rule's per-tool costs name the actions too
        meta["decision"]["costs"] = {"caption": 1.0}
    if meta.get("direct_action") not in (None, "direct"):
        pytest.skip("default router's direct action is not named 'direct'")
    (folder / "router.json").write_text(json.dumps(meta))
    res = _route(PLAIN_Q, "--audio", str(speech_wav), "--router", str(folder))
    _one_line_error(res, "caption", "router actions: direct, caption", "toolcache tools: asr")


# ---------------------------------------------------------------------------------------------
# with a reasoner: the real loopback OpenAI-compatible server
# ---------------------------------------------------------------------------------------------

def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


def test_unreachable_reasoner_exits_3_naming_the_url(speech_wav):
    url = _closed_port_url()
    res = _route(PLAIN_Q, "--audio", str(speech_wav), "--choices", SPEECH_CHOICES,
                 "--reasoner-url", url, "--model", "m", "--retries", "0", "--timeout", "2")
    err = _one_line_error(res, code=EXIT_PEER)
    assert url.split("/v1")[0] in err


def test_route_with_reasoner_gives_the_answer_from_the_tool_evidence(speech_wav, speech_q):
    from openai_server import OpenAITestServer, default_policy, prompt_text_of

    question, choices = speech_q
    with OpenAITestServer() as server:
        res = _route(question, "--audio", str(speech_wav), "--choices", choices, "--reasoner", "openai",
                     "--reasoner-url", server.url, "--model", server.model, "--json")
        assert res.exit_code == 0, res.stderr
        doc = json.loads(res.stdout)
        assert server.request_count == 1
        sent = server.requests[0]
    assert sent["audio"][0][1] == speech_wav.read_bytes()  # the audio itself went to the reasoner
    prompt = prompt_text_of(sent["body"])
    assert "originally from Chicago" in prompt  # the real transcript went in as evidence
    assert doc["routing"]["action"] == "asr"
    ans = doc["answer"]
    reply = default_policy(sent["body"])  # what the server answered: "(X) option text"
    assert ans["raw"] == reply and ans["choice"] == reply[4:] and ans["matched_by"] != "none"
    assert ans["index"] == choices.split("|").index(ans["choice"])
    if choices == SPEECH_CHOICES:
        # option A is wrong; the server picks the option named in the evidence: only the
        # transcript can give the right answer
        assert ans["choice"] == "Chicago"
    assert ans["model"] == server.model and doc["timings"]["reasoner_ms"] > 0

    # human-readable output shows the answer table
    with OpenAITestServer() as server:
        res = _route(question, "--audio", str(speech_wav), "--choices", choices,
                     "--reasoner-url", server.url, "--model", server.model)
    assert res.exit_code == 0, res.stderr
    assert "matched_by" in res.stdout and ans["choice"][:20] in " ".join(res.stdout.split())


def test_route_with_reasoner_but_no_choices_is_a_usage_error(speech_wav):
    _one_line_error(_route(PLAIN_Q, "--audio", str(speech_wav), "--reasoner-url", "http://127.0.0.1:9/v1"),
                    "--choices")


def test_sigint_while_waiting_for_the_reasoner_exits_130_with_one_line(tmp_path, speech_wav):
    """A real `audiorouter route` process, interrupted (SIGINT) while the reasoner is answering."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from openai_server import OpenAITestServer

    repo = Path(__file__).resolve().parent.parent
    question, choices = DIRECT_Q  # no tool: the process reaches the reasoner quickly
    with OpenAITestServer(delay_s=30.0) as server:  # the reply would take 30 s; stop() wakes it
        proc = subprocess.Popen(
            # SIGINT restored to Python's default: a background parent (nohup, `&`) passes it on ignored
            [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from cli.main import app; app(sys.argv[1:], prog_name='audiorouter')", "route", question, "--audio", str(speech_wav), "--choices", choices,
             "--reasoner-url", server.url, "--model", server.model, "--timeout", "60"],
            cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while server.request_count == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.request_count == 1, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            try:  # the reply is 30 s away: an interrupt must not wait for it
                _, stderr = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("route did not exit within 20 s of SIGINT (waiting for the in-flight request?)")
            assert time.monotonic() - t0 < 20
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = stderr.decode()
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err
