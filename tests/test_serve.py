"""`audiorouter serve`: a real gateway process on 127.0.0.1 in front of a real OpenAI-compatible test
server, driven with the `openai` SDK (and raw httpx where the SDK hides what is checked)."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from gateway_process import REPO, GatewayProcess
from openai_server import OpenAITestServer, prompt_text_of

openai = pytest.importorskip("openai")

QUESTION = "What city does the second speaker say she is originally from?"
CHOICES = ["Boston", "Chicago", "Dallas", "Denver"]
EVIDENCE_HEADER = "Auxiliary evidence from the tool"


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def audio_message(data: str, text: str = QUESTION, part: str = "input_audio") -> list[dict]:
    if part == "input_audio":
        audio = {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    else:
        audio = {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{data}"}}
    return [{"role": "user", "content": [audio, {"type": "text", "text": text}]}]


def tone(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def metric(base: str, name: str, headers: dict | None = None) -> float:
    text = httpx.get(base + "/metrics", headers=headers or {}, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gateway-cache")


@pytest.fixture(scope="module")
def upstream():
    with OpenAITestServer(slow_s=6.0) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream, shared_cache, tmp_path_factory):
    log = tmp_path_factory.mktemp("gwlog") / "decisions.jsonl"
    with GatewayProcess(["--upstream", upstream.url, "--timeout", "3", "--decision-log", str(log)],
                        env={"AUDIOROUTER_CACHE_DIR": str(shared_cache)}) as gw:
        gw.decision_log = log
        yield gw


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(autouse=True)
def _reset_upstream(upstream):
    upstream.faults.clear()
    upstream.default_fault = "ok"
    yield


def test_audio_question_is_routed_and_evidence_reaches_the_upstream_prompt(client, upstream, speech_wav, gateway,
                                                                           shared_cache, monkeypatch):
    monkeypatch.setenv("AUDIOROUTER_CACHE_DIR", str(shared_cache))
    n = len(upstream.requests)
    raw = client.chat.completions.with_raw_response.create(
        model=upstream.model, messages=audio_message(b64(speech_wav)), extra_body={"choices": CHOICES})
    completion = raw.parse()
    decision = completion.model_extra["audiorouter"]
    assert raw.headers["x-audiorouter-action"] == decision["action"]
    assert set(decision["probs"]) == {"direct", "asr"}
    assert abs(sum(decision["probs"].values()) - 1.0) < 1e-4
    # the transcript question goes to ASR: its evidence names Chicago, which the test server picks
    assert decision["action"] == "asr"
    sent = upstream.requests[n]["body"]
    text = prompt_text_of(sent)
    assert EVIDENCE_HEADER in text and "`asr`" in text
    assert "(B) Chicago" in text and QUESTION in text
    assert "choices" not in sent and "audiorouter" not in sent   # the gateway's own fields stay here
    assert upstream.requests[n]["audio"][0][1] == speech_wav.read_bytes()  # audio forwarded untouched
    assert completion.choices[0].message.content == "(B) Chicago"
    # the prompt is exactly what `route` builds for the reasoner (same evidence, from the same cache)
    import toolcache
    from cli.pipeline import evidence_for_prompt
    from reasoner.prompt import user_text

    evidence = toolcache.run("asr", str(speech_wav))
    assert evidence["cached"] is True
    assert text == user_text(QUESTION, CHOICES, evidence_for_prompt(evidence))


def test_second_request_is_a_cache_hit_and_choices_line_works(client, upstream, speech_wav):
    text = QUESTION + "\nChoices: Boston | Chicago | Dallas | Denver"
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model=upstream.model,
                                                               messages=audio_message(b64(speech_wav), text, "audio_url"))
    decision = raw.parse().model_extra["audiorouter"]
    assert decision["action"] == "asr" and decision["cache_hit"] is True
    assert decision["tool_ms"] < 500
    # the same question and choices again: the decision comes from the memo, equal to the first
    assert decision["memo"] is True
    first = client.chat.completions.create(model=upstream.model, messages=audio_message(b64(speech_wav), QUESTION + "?"),
                                           extra_body={"choices": CHOICES}).model_extra["audiorouter"]
    assert first["memo"] is False
    # the audio reaches the upstream byte for byte (spliced into the body, not re-encoded)
    assert upstream.requests[-2]["audio"][0][1] == speech_wav.read_bytes()
    assert "(D) Denver" in prompt_text_of(upstream.requests[-1]["body"])
    assert "Choices:" not in prompt_text_of(upstream.requests[-1]["body"])


def test_streaming_passes_through_as_sse(client, upstream, speech_wav):
    stream = client.chat.completions.create(model=upstream.model, messages=audio_message(b64(speech_wav)),
                                            extra_body={"choices": CHOICES}, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == "(B) Chicago"
    assert len(pieces) >= 2                      # really streamed, not one blob
    assert upstream.requests[-1]["body"]["stream"] is True


def test_request_without_audio_passes_straight_through(client, upstream):
    messages = [{"role": "user", "content": "Pick one.\n(A) red\n(B) blue"}]
    raw = client.chat.completions.with_raw_response.create(model=upstream.model, messages=messages, temperature=0.3)
    assert raw.headers["x-audiorouter-action"] == "none"
    assert "audiorouter" not in (raw.parse().model_extra or {})
    assert upstream.requests[-1]["body"]["messages"] == messages
    assert upstream.requests[-1]["body"]["temperature"] == 0.3


def test_models_are_proxied(client, upstream):
    assert [m.id for m in client.models.list().data] == list(upstream.models)


def test_upstream_500_becomes_502_with_openai_error(client, upstream, speech_wav):
    upstream.faults[:] = ["500"]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=upstream.model, messages=audio_message(b64(speech_wav)),
                                       extra_body={"choices": CHOICES})
    assert err.value.status_code == 502
    assert err.value.body["type"] == "upstream_error"


def test_upstream_timeout_becomes_504(client, upstream, speech_wav):
    upstream.faults[:] = ["slow"]        # sleeps 6 s; the gateway's --timeout is 3 s
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=upstream.model, messages=audio_message(b64(speech_wav)),
                                       extra_body={"choices": CHOICES})
    assert err.value.status_code == 504 and err.value.body["type"] == "upstream_timeout"
    assert time.monotonic() - t0 < 5.5


def test_redirect_is_not_followed_and_key_does_not_leave(upstream, speech_wav, shared_cache):
    with OpenAITestServer() as other:
        upstream.redirect_to = f"http://127.0.0.1:{other.port}"
        upstream.faults[:] = ["redirect"]
        with GatewayProcess(["--upstream", upstream.url], env={"AUDIOROUTER_CACHE_DIR": str(shared_cache),
                                                               "AUDIOROUTER_UPSTREAM_API_KEY": "sk-upstream-secret"}) as gw:
            r = httpx.post(gw.url + "/chat/completions", timeout=30, json={
                "model": upstream.model, "messages": audio_message(b64(speech_wav)), "choices": CHOICES})
            assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_redirect"
            assert "sk-upstream-secret" not in r.text
            assert upstream.requests[-1]["headers"].get("Authorization") == "Bearer sk-upstream-secret"
        assert other.requests == [] and other.paths == []          # nothing reached the other origin


def test_upstream_down_becomes_502(speech_wav, shared_cache):
    with OpenAITestServer() as probe:
        dead = probe.url
    with GatewayProcess(["--upstream", dead], env={"AUDIOROUTER_CACHE_DIR": str(shared_cache)}) as gw:
        r = httpx.post(gw.url + "/chat/completions", timeout=30, json={
            "model": "m", "messages": audio_message(b64(speech_wav)), "choices": CHOICES})
        assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_unavailable"


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"model": "m", "messages": audio_message("@@@not-base64@@@")}).encode(), 400, "not valid base64"),
    (json.dumps({"model": "m", "messages": audio_message(base64.b64encode(b"RIFF garbage" * 50).decode())}).encode(),
     400, "cannot decode"),
    (json.dumps({"model": "m", "messages": "hi"}).encode(), 400, "messages"),
    (json.dumps({"model": "m", "messages": audio_message(base64.b64encode(b"x").decode()),
                 "choices": ["a", "a"]}).encode(), 400, "duplicate"),
])
def test_malformed_requests_get_openai_errors(gateway, body, status, fragment):
    r = httpx.post(gateway.url + "/chat/completions", content=body, timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status
    assert fragment in r.json()["error"]["message"]
    assert "Traceback" not in r.text


def test_bad_base64_is_refused_every_time(gateway, speech_wav):
    # a clip is memoised only once it decoded: the same junk twice gets the same 400
    junk = b64(speech_wav)[:-8] + "@@@@@@@@"
    for _ in range(2):
        r = httpx.post(gateway.url + "/chat/completions", timeout=30,
                       json={"model": "m", "messages": audio_message(junk, part="audio_url"), "choices": CHOICES})
        assert r.status_code == 400 and "not valid base64" in r.json()["error"]["message"]


@pytest.mark.parametrize("part", ["input_audio", "audio_url"])
@pytest.mark.parametrize("audio_part", ["input_audio", "none"])
def test_spliced_forwarded_body_equals_the_plain_encoding(part, audio_part):
    from cli.gateway.parsing import encode_forwarded, forwarded_body, parse_chat

    data = base64.b64encode(bytes(range(256)) * 64).decode()
    body = {"model": "m", "temperature": 0, "choices": CHOICES,
            "messages": [{"role": "system", "content": "sé \"quoted\""},
                         *audio_message(data, QUESTION + " \u00e9\n", part)]}
    req = parse_chat(json.loads(json.dumps(body)))
    evidence = {"tool": "asr", "result": {"text": 'she said "Chicago"'}}
    assert json.loads(encode_forwarded(req, evidence, audio_part)) == forwarded_body(req, evidence, audio_part)


def test_route_endpoint_with_and_without_audio(gateway, speech_wav):
    r = httpx.post(gateway.url + "/route", json={"question": QUESTION, "choices": CHOICES}, timeout=30)
    assert r.status_code == 200 and r.json()["evidence"] is None
    assert r.json()["routing"]["action"] in ("direct", "asr")
    r = httpx.post(gateway.url + "/route", timeout=60, json={
        "question": QUESTION, "choices": CHOICES, "audio": {"data": b64(speech_wav), "format": "wav"}})
    doc = r.json()
    assert doc["routing"]["action"] == "asr" and "Chicago" in doc["evidence"]["result"]["text"]


def test_metrics_health_and_decision_log(gateway, client, upstream, speech_wav):
    before = metric(gateway.base, 'audiorouter_requests_total{action="asr",endpoint="chat"}')
    client.chat.completions.create(model=upstream.model, messages=audio_message(b64(speech_wav)),
                                   extra_body={"choices": CHOICES})
    after = metric(gateway.base, 'audiorouter_requests_total{action="asr",endpoint="chat"}')
    assert after == before + 1
    assert metric(gateway.base, "audiorouter_routing_seconds_count") >= 1
    assert httpx.get(gateway.base + "/healthz", timeout=10).json()["status"] == "ok"
    records = [json.loads(line) for line in gateway.decision_log.read_text().splitlines()]
    routed = [r for r in records if r["action"] != "none"]
    assert routed and routed[-1]["action"] == "asr" and routed[-1]["tool"]["name"] == "asr"
    assert len(routed[-1]["question_sha256"]) == 64
    assert QUESTION not in gateway.decision_log.read_text()          # a hash, never the text


def test_client_disconnect_cancels_the_upstream_call(gateway, upstream, speech_wav):
    upstream.faults[:] = ["slow"]
    cancelled = metric(gateway.base, "audiorouter_cancelled_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/chat/completions", timeout=httpx.Timeout(1.0, connect=5.0), json={
            "model": upstream.model, "messages": audio_message(b64(speech_wav)), "choices": CHOICES})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and metric(gateway.base, "audiorouter_cancelled_total") == cancelled:
        time.sleep(0.1)
    assert metric(gateway.base, "audiorouter_cancelled_total") == cancelled + 1
    assert metric(gateway.base, "audiorouter_in_flight") == 0
    # a client going away is routine: the gateway's log gets no traceback for it
    assert not any("Traceback" in line for line in gateway.stderr_lines)


# -- a strict gateway: keys, small limits, text-only upstream, concurrency 2 ------------------------

@pytest.fixture(scope="module")
def strict(upstream, shared_cache):
    with GatewayProcess(["--upstream", upstream.url, "--api-key", "client-key", "--audio-part", "none",
                         "--max-concurrency", "2", "--max-body-mb", "1", "--max-audio-seconds", "5"],
                        env={"AUDIOROUTER_CACHE_DIR": str(shared_cache),
                             "AUDIOROUTER_UPSTREAM_API_KEY": "sk-upstream-secret"}) as gw:
        yield gw


AUTH = {"Authorization": "Bearer client-key"}


def test_auth_required_and_client_key_not_forwarded(strict, upstream, tmp_path):
    clip = b64(tone(tmp_path / "tone.wav", 2.0))
    body = {"model": upstream.model, "messages": audio_message(clip, QUESTION), "choices": CHOICES}
    assert httpx.post(strict.url + "/chat/completions", json=body, timeout=30).status_code == 401
    r = httpx.post(strict.url + "/chat/completions", json=body, timeout=30, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(strict.url + "/chat/completions", json=body, timeout=60, headers=AUTH)
    assert r.status_code == 200
    headers = upstream.requests[-1]["headers"]
    assert headers.get("Authorization") == "Bearer sk-upstream-secret"   # the upstream's own key only
    assert httpx.get(strict.base + "/healthz", timeout=10).status_code == 200   # health stays open


def test_audio_part_none_sends_text_only(strict, upstream, tmp_path):
    clip = b64(tone(tmp_path / "tone.wav", 2.0))
    r = httpx.post(strict.url + "/chat/completions", timeout=60, headers=AUTH, json={
        "model": upstream.model, "messages": audio_message(clip, QUESTION), "choices": CHOICES})
    assert r.status_code == 200
    sent = upstream.requests[-1]
    assert sent["audio"] == []
    parts = sent["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text"] and "(A) Boston" in parts[0]["text"]
    if r.json()["audiorouter"]["action"] != "direct":
        assert EVIDENCE_HEADER in parts[0]["text"]


def test_oversize_body_and_too_long_audio(strict, upstream, tmp_path):
    big = base64.b64encode(b"\0" * (1024 * 1024 + 10)).decode()
    r = httpx.post(strict.url + "/chat/completions", timeout=30, headers=AUTH,
                   json={"model": upstream.model, "messages": audio_message(big)})
    assert r.status_code == 413 and "--max-body-mb" in r.json()["error"]["message"]
    long_clip = b64(tone(tmp_path / "long.wav", 8.0))
    r = httpx.post(strict.url + "/chat/completions", timeout=30, headers=AUTH,
                   json={"model": upstream.model, "messages": audio_message(long_clip), "choices": CHOICES})
    assert r.status_code == 413 and "8.0 s" in r.json()["error"]["message"]


def test_saturation_answers_429_with_retry_after(strict, upstream, tmp_path):
    clip = b64(tone(tmp_path / "tone.wav", 2.0))
    upstream.default_fault = "slow"
    upstream.slow_s = 2.0
    body = {"model": upstream.model, "messages": audio_message(clip, QUESTION), "choices": CHOICES}

    def one(_):
        r = httpx.post(strict.url + "/chat/completions", json=body, headers=AUTH, timeout=30)
        return r.status_code, r.headers.get("retry-after")

    try:
        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(one, range(5)))
    finally:
        upstream.default_fault, upstream.slow_s = "ok", 6.0
    codes = [c for c, _ in results]
    assert codes.count(200) >= 2 and codes.count(429) >= 1
    assert all(ra == "1" for c, ra in results if c == 429)


def test_bad_upstream_url_is_one_line_without_the_password():
    r = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--upstream", "http://user:hunter2@127.0.0.1:9/v1",
                        "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "hunter2" not in r.stderr + r.stdout and "Traceback" not in r.stderr
