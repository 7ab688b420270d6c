"""The `openai` back-end against a real HTTP server on 127.0.0.1 (tests/openai_server.py).

Asserts what crosses the wire (audio bytes, model, prompt), the parse, bounded retries with
backoff, timeouts, no retries on 4xx, concurrency, and the errors' messages (URL + fix).
"""
from __future__ import annotations

import socket
import time

import pytest

import reasoner
from openai_server import OpenAITestServer
from reasoner.errors import ReasonerError, ReasonerTimeout, ReasonerUnavailable

CHOICES = ["a dog barking", "a person speaking", "a car engine", "silence"]


@pytest.fixture
def server():
    with OpenAITestServer() as srv:
        yield srv


def _reasoner(srv: OpenAITestServer, **options):
    options = {"base_url": srv.url, "model": srv.model, "backoff_s": 0.01, **options}
    return reasoner.create_reasoner("openai", **options)


def test_registry_lists_backends_and_rejects_unknown():
    assert reasoner.available_reasoners() == ["openai", "qwen2-audio", "qwen2.5-omni"]
    with pytest.raises(ReasonerError, match="unknown reasoner 'gpt'.*openai"):
        reasoner.create_reasoner("gpt")
    with pytest.raises(ValueError, match="unknown option.*temprature.*valid:.*temperature"):
        reasoner.create_reasoner("openai", base_url="http://127.0.0.1:1/v1", temprature=0)
    with pytest.raises(ValueError, match="audio_part must be one of input_audio, audio_url"):
        reasoner.create_reasoner("openai", base_url="http://127.0.0.1:1/v1", audio_part="mp3")


def test_base_url_from_env_and_missing(monkeypatch):
    monkeypatch.delenv("AUDIOROUTER_REASONER_URL", raising=False)
    with pytest.raises(ValueError, match="AUDIOROUTER_REASONER_URL"):
        reasoner.create_reasoner("openai")
    monkeypatch.setenv("AUDIOROUTER_REASONER_URL", "http://127.0.0.1:9")
    r = reasoner.create_reasoner("openai", model="m")
    assert r.options.base_url == "http://127.0.0.1:9/v1"  # "/v1" added to a bare host


def test_answer_sends_audio_bytes_and_parses_marker(server, speech_wav):
    r = _reasoner(server)
    result = r.answer(speech_wav, "What is heard? [[answer: C]]", CHOICES)
    assert set(result) == {"choice", "index", "raw", "matched_by", "model", "elapsed_s"}
    assert result["index"] == 2 and result["choice"] == "a car engine"
    assert result["raw"] == "(C) a car engine" and result["matched_by"] == "exact"
    assert result["model"] == server.model and result["elapsed_s"] > 0
    (record,) = server.requests
    body = record["body"]
    assert body["model"] == server.model and body["temperature"] == 0 and body["max_tokens"] == 64
    part = body["messages"][-1]["content"][0]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    assert record["audio"] == [("wav", speech_wav.read_bytes())]  # base64 decodes to the file bytes


def test_audio_url_part_and_evidence_policy(server, birds_wav):
    r = _reasoner(server, audio_part="audio_url")
    evidence = {"tool": "sound_events", "result": {"labels": [{"label": "a dog barking", "score": 0.8}]},
                "limits": "AudioSet classes only."}
    result = r.answer(birds_wav, "What is heard?", CHOICES, evidence)
    assert result["index"] == 0  # the server answers with the option named in the evidence
    body = server.requests[-1]["body"]
    part = body["messages"][-1]["content"][0]
    assert part["type"] == "audio_url" and part["audio_url"]["url"].startswith("data:audio/wav;base64,")
    assert server.requests[-1]["audio"][0][1] == birds_wav.read_bytes()
    text = body["messages"][-1]["content"][1]["text"]
    assert "Auxiliary evidence from the tool `sound_events`" in text and "AudioSet classes only." in text
    # without evidence the same question falls back to option A, and the prompt has no evidence
    plain = r.answer(birds_wav, "What is heard?", ["silence", "a dog barking"])
    assert plain["index"] == 0 and "Auxiliary" not in server.requests[-1]["body"]["messages"][-1]["content"][1]["text"]


def test_model_discovered_from_server_when_not_given(server, speech_wav):
    r = reasoner.create_reasoner("openai", base_url=server.url)
    assert r.answer(speech_wav, "q?", CHOICES)["model"] == server.model
    assert "/v1/models" in server.paths
    assert r.cache_identity() == {"backend": "openai", "model": server.model, "prompt_version": reasoner.PROMPT_VERSION,
                                  "params": {"temperature": 0.0, "max_tokens": 64, "audio_part": "input_audio",
                                             "max_evidence_chars": 2000},
                                  "server": server.url, "served_root": server.model}


def test_5xx_and_dropped_connections_are_retried_then_succeed(server, speech_wav):
    server.faults = ["500", "drop", "503"]
    r = _reasoner(server, max_retries=3)
    result = r.answer(speech_wav, "q? [[answer: B]]", CHOICES)
    assert result["index"] == 1
    assert server.request_count == 4  # 3 failures + the success


def test_retries_are_bounded(server, speech_wav):
    server.default_fault = "500"
    r = _reasoner(server, max_retries=2, backoff_s=0.05)
    start = time.monotonic()
    with pytest.raises(ReasonerUnavailable) as info:
        r.answer(speech_wav, "q?", CHOICES)
    elapsed = time.monotonic() - start
    assert server.request_count == 3  # 1 + max_retries, no more
    assert server.url in str(info.value) and "3 attempts" in str(info.value) and "vllm serve" in str(info.value)
    # backoff: 0.05 s then 0.1 s, each with +-50 % jitter -> at least 0.075 s of waiting
    assert elapsed >= 0.075
    times = [rec["t"] for rec in server.requests]  # server-side arrival times: the waits grow
    assert times[1] - times[0] >= 0.025 and times[2] - times[1] >= 0.05


def test_timeout_raises_reasoner_timeout_naming_url(server, speech_wav):
    server.default_fault = "slow"
    server.slow_s = 10.0
    r = _reasoner(server, timeout_s=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(ReasonerTimeout) as info:
        r.answer(speech_wav, "q?", CHOICES)
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 2.5  # two attempts of 0.3 s + a short backoff, far below slow_s
    assert server.url in str(info.value) and "--timeout" in str(info.value)
    assert server.request_count == 2
    assert isinstance(info.value, ReasonerUnavailable)  # the CLI maps it to the "peer failed" exit code


def test_malformed_json_is_a_reasoner_error_not_retried(server, speech_wav):
    server.faults = ["malformed"]
    r = _reasoner(server, max_retries=3)
    with pytest.raises(ReasonerError, match="malformed JSON") as info:
        r.answer(speech_wav, "q?", CHOICES)
    assert not isinstance(info.value, ReasonerUnavailable)
    assert server.url in str(info.value)
    assert server.request_count == 1


def test_unknown_model_404_not_retried(server, speech_wav):
    r = _reasoner(server, model="Qwen/Not-Served", max_retries=3)
    with pytest.raises(ReasonerError, match="HTTP 404.*Not-Served.*does not exist.*/v1/models") as info:
        r.answer(speech_wav, "q?", CHOICES)
    assert not isinstance(info.value, ReasonerUnavailable)
    assert server.request_count == 1


def test_unreachable_server_names_url_and_fix(speech_wav):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = reasoner.create_reasoner("openai", base_url=f"http://127.0.0.1:{port}/v1", model="m",
                                 max_retries=3, backoff_s=1.0)
    start = time.monotonic()
    with pytest.raises(ReasonerUnavailable) as info:
        r.answer(speech_wav, "q?", CHOICES)
    # a refused connection stops at once: no retries, no backoff (was 4 attempts over seconds)
    assert time.monotonic() - start < 0.5
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in message
    assert "refused" in message and "not retried" in message and "AUDIOROUTER_REASONER_URL" in message
    assert "\n" not in message


def test_answer_many_overlaps_requests_and_keeps_order(speech_wav):
    with OpenAITestServer(delay_s=0.3) as srv:
        r = _reasoner(srv, concurrency=4)
        letters = "ABCDABCD"
        requests = [{"audio_path": speech_wav, "question": f"q{i}? [[answer: {letter}]]", "choices": CHOICES}
                    for i, letter in enumerate(letters)]
        start = time.monotonic()
        results = r.answer_many(requests)
        elapsed = time.monotonic() - start
        r.close()
        assert [res["index"] for res in results] == [ord(letter) - 65 for letter in letters]
        assert srv.request_count == 8
        assert 2 <= srv.max_in_flight <= 4  # overlapped, never above the concurrency option
        assert elapsed < 8 * 0.3 * 0.75  # clearly faster than one at a time (2.4 s)
        assert all(0.25 <= res["elapsed_s"] < 2.4 for res in results)  # per-request wall time


def test_answer_many_return_exceptions_keeps_other_answers(server, speech_wav, tmp_path):
    r = _reasoner(server, concurrency=2)
    requests = [
        {"audio_path": speech_wav, "question": "q? [[answer: D]]", "choices": CHOICES},
        {"audio_path": tmp_path / "missing.wav", "question": "q?", "choices": CHOICES},
        {"audio_path": speech_wav, "question": "q?", "choices": CHOICES},
    ]
    results = r.answer_many(requests, return_exceptions=True)
    assert results[0]["index"] == 3 and results[2]["index"] == 0
    assert isinstance(results[1], ReasonerError) and "audio file not found" in str(results[1])
    with pytest.raises(ReasonerError, match="request 1: audio file not found"):
        r.answer_many(requests)
    r.close()


def test_bad_audio_format_rejected(server, tmp_path):
    clip = tmp_path / "clip.aiff"
    clip.write_bytes(b"FORM0000AIFF")
    with pytest.raises(ReasonerError, match="cannot be sent.*wav"):
        _reasoner(server).answer(clip, "q?", CHOICES)
    assert server.request_count == 0


def test_api_key_sent_as_bearer(server, speech_wav, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    r = _reasoner(server)
    r.answer(speech_wav, "q?", CHOICES)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("OPENAI_API_KEY")
    _reasoner(server).answer(speech_wav, "q?", CHOICES)
    assert "Authorization" not in server.requests[-1]["headers"]


# ---------------------------------------------------------------------------------------------
# issue 12 (items 7, 11, 12, 14, 22) and issue 11 item 4
# ---------------------------------------------------------------------------------------------

def test_redirect_is_not_followed_and_the_key_stays_home(speech_wav, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-777")
    with OpenAITestServer() as other, OpenAITestServer(default_fault="redirect") as server:
        server.redirect_to = f"http://127.0.0.1:{other.port}"
        r = _reasoner(server, max_retries=3)
        with pytest.raises(ReasonerError) as info:
            r.answer(speech_wav, "q?", CHOICES)
        # the other origin got nothing: no request, so no Authorization header either
        assert other.request_count == 0 and other.paths == []
    message = str(info.value)
    assert not isinstance(info.value, ReasonerUnavailable)  # a configuration problem, not retried
    assert server.request_count == 1
    assert f"127.0.0.1:{other.port}" in message and "not followed" in message and "--reasoner-url" in message
    assert "sk-secret-777" not in message and "\n" not in message


@pytest.mark.parametrize("url", ["http://user:pa55word@127.0.0.1:8000/v1", "https://tok@example.org/v1"])
def test_userinfo_urls_are_refused_without_echoing_the_password(url):
    with pytest.raises(ValueError) as info:
        reasoner.create_reasoner("openai", base_url=url, model="m")
    message = str(info.value)
    assert "credentials" in message and "OPENAI_API_KEY" in message
    assert "pa55word" not in message and "tok@" not in message and "***@" in message


def test_a_key_quoted_back_by_the_server_is_masked(server, speech_wav, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-echoed-4242")
    server.faults = ["401echo"]
    with pytest.raises(ReasonerError) as info:
        _reasoner(server).answer(speech_wav, "q?", CHOICES)
    assert "HTTP 401" in str(info.value) and "sk-echoed-4242" not in str(info.value)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-echoed-4242"  # it was sent


def test_cache_identity_names_the_server_and_the_weights_behind_the_name():
    with OpenAITestServer(roots={"llm": "/weights/qwen2-audio"}, models=("llm",)) as a, \
            OpenAITestServer(roots={"llm": "/weights/other-model"}, models=("llm",)) as b:
        ia = reasoner.create_reasoner("openai", base_url=a.url, model="llm").cache_identity()
        ib = reasoner.create_reasoner("openai", base_url=b.url, model="llm").cache_identity()
    assert ia["served_root"] == "/weights/qwen2-audio" and ib["served_root"] == "/weights/other-model"
    assert ia["server"] == a.url and ib["server"] == b.url and ia != ib


def test_cache_identity_of_a_down_server_raises_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = reasoner.create_reasoner("openai", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(ReasonerUnavailable):
        r.cache_identity()


def test_retries_zero_says_one_attempt(server, speech_wav):
    server.default_fault = "503"
    with pytest.raises(ReasonerUnavailable) as info:
        _reasoner(server, max_retries=0).answer(speech_wav, "q?", CHOICES)
    assert "after 1 attempt " in str(info.value) and "1 attempts" not in str(info.value)


def test_audio_part_none_sends_text_only(server, speech_wav, birds_wav):
    r = _reasoner(server, audio_part="none")
    evidence = {"tool": "asr", "result": {"text": "a person speaking here"}, "limits": "English only."}
    result = r.answer(speech_wav, "What is heard?", CHOICES, evidence=evidence)
    assert result["choice"] == "a person speaking"  # the policy read the evidence
    body = server.requests[-1]["body"]
    parts = body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text"] and server.requests[-1]["audio"] == []
    assert "Options:" in parts[0]["text"] and "a person speaking here" in parts[0]["text"]
    assert r.cache_identity()["params"]["audio_part"] == "none"
    # the exposed builder gives exactly what went over the wire
    from reasoner.openai_backend import chat_messages
    assert chat_messages(speech_wav, "What is heard?", CHOICES, evidence, audio_part_style="none") == body["messages"]
    with_audio = chat_messages(birds_wav, "What is heard?", CHOICES, None)
    assert with_audio[-1]["content"][0]["type"] == "input_audio"


def test_cancel_aborts_in_flight_requests_at_once(server, speech_wav):
    import threading

    server.default_fault = "slow"
    server.slow_s = 20.0
    r = _reasoner(server, timeout_s=30, concurrency=4)
    requests = [{"audio_path": speech_wav, "question": "q?", "choices": CHOICES} for _ in range(4)]
    done = {}

    def run():
        done["results"] = r.answer_many(requests, return_exceptions=True)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while server.in_flight < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.in_flight == 4
    start = time.monotonic()
    r.cancel()
    t.join(timeout=5)
    assert not t.is_alive() and time.monotonic() - start < 2.0  # not the 20 s of the slow replies
    assert all(isinstance(x, ReasonerUnavailable) for x in done["results"])
    r.close()


def test_test_server_backlog_queues_64_connections_before_any_accept():
    """Issue 16 item 9: with http.server's backlog of 5, connections beyond ~6 wait for SYN
    retransmits while the server is busy; 128 queues them at once."""
    server = OpenAITestServer()  # not started: nothing accepts, only the kernel's queue holds them
    socks = []
    try:
        for _ in range(64):
            s = socket.socket()
            s.settimeout(0.5)
            s.connect(("127.0.0.1", server.port))  # times out once the accept queue is full
            socks.append(s)
        assert len(socks) == 64
    finally:
        for s in socks:
            s.close()
        server._httpd.server_close()
