"""Benchmark: the `audiorouter serve` gateway on loopback, against the same requests sent straight
to the upstream, in ONE run.

    python bench/bench_serve.py                 # rich table
    python bench/bench_serve.py --json          # one JSON document
    python bench/bench_serve.py --upstream-ms 0 # an upstream that answers at once (throughput bound)

What runs: bench/upstream_stub.py (tests/openai_server.py's answers on an asyncio server, in its own
process) as the upstream, answering after --upstream-ms of model time (default 100 ms, a short
answer of a 7B audio LLM on a GPU); two real gateway processes (`audiorouter serve`, routers
`default` and `fast`) on 127.0.0.1; wrk as the closed-loop load generator (a C client: a Python
one spent more CPU than the gateway; the asyncio httpx client is the fallback without wrk). Each
request carries a 10 s 16 kHz mono WAV (320 KB, base64 in the body) cut from
examples/audio/speech-two-speakers.wav and the transcript question, which the default router sends
to `asr`; the tool output is warmed first, and the question repeats, so the gateway's cost is a
routing-memo hit + a cache hit + re-writing the body. The "32 distinct" rows send a new question
with every request (wrk appends " (variant T-N)"), so the router runs each time.

Printed per router and concurrency level (1, 8, 32 clients): p50/p99 latency straight to the
upstream and through the gateway, their difference (the added latency), the ratio, the gateway's
req/s and CPU time per request (/proc), errors; each figure is the median over --rounds rounds of
(direct run, gateway run), so one round's scheduling hiccup on the shared 2 cores does not decide a
row (every round is in the --json output); then /v1/route requests per second for each router
(distinct questions, no memo) and the gateways' peak memory (VmHWM).
Targets (2 cores, cached tools): added p50 <= 5 ms and p99 <= 25 ms at 32 clients; /v1/route
>= 300 req/s (default) and >= 2000 req/s (fast).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

QUESTION = "What city does the second speaker say she is originally from?"
CHOICES = ["Boston", "Chicago", "Dallas", "Denver"]
TARGETS = {"added_p50_ms": 5.0, "added_p99_ms": 25.0, "route_default_rps": 300.0, "route_fast_rps": 2000.0}


def clip_b64(seconds: float = 10.0) -> str:
    import soundfile as sf

    from toolcache.audio import load_audio

    clip = load_audio(str(REPO / "examples/audio/speech-two-speakers.wav"), max_seconds=seconds)
    path = Path(tempfile.mkdtemp()) / "clip.wav"
    sf.write(path, clip.samples, clip.sample_rate, subtype="PCM_16")
    return base64.b64encode(path.read_bytes()).decode()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], int]:
    """Send `bodies` with `concurrency` clients; (latencies in ms, errors)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = list(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal errors
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                r = await client.post(url, json=body)
                latencies.append((time.perf_counter() - t) * 1e3)
                if r.status_code != 200:
                    errors += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


_WRK_ROUTE = r"""
counter = 0
request = function()
  counter = counter + 1
  local body = '{"question": "QUESTION (variant ' .. counter .. ')", "choices": CHOICES}'
  return wrk.format("POST", "/v1/route", {["Content-Type"] = "application/json"}, body)
end
"""
_WRK_BODY = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("BODYFILE", "rb"))
wrk.body = f:read("*a")
f:close()
"""
_WRK_DISTINCT = r"""
-- every request a new question: the body's question text gets " (variant T-N)" (T: wrk thread)
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local f = assert(io.open("HEADFILE", "rb"))
local head = f:read("*a")
f:close()
local g = assert(io.open("TAILFILE", "rb"))
local tail = g:read("*a")
g:close()
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    head .. " (variant " .. tostring(tid) .. "-" .. counter .. ")" .. tail)
end
"""
_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def run_wrk(url: str, script: str, seconds: float, clients: int) -> dict:
    """Closed-loop load from wrk (a C load generator: it costs far less CPU than a Python client):
    `clients` connections, each sending its next request when the last one is answered."""
    import shutil
    import subprocess

    path = Path(tempfile.mkdtemp()) / "load.lua"
    path.write_text(script + _WRK_DONE)
    threads = min(2, clients)
    out = subprocess.run([shutil.which("wrk"), f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency",
                          "--timeout", "30s", "-s", str(path), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    doc = json.loads(line.split(" ", 1)[1])
    return {"requests": doc["requests"], "rps": doc["requests"] / (doc["duration_us"] / 1e6),
            "p50_ms": doc["p50_us"] / 1e3, "p99_ms": doc["p99_us"] / 1e3, "errors": doc["errors"], "client": "wrk"}


def route_rps_wrk(base: str, seconds: float, clients: int) -> dict:
    """/v1/route load from wrk, each request a distinct question (no memo helps)."""
    script = _WRK_ROUTE.replace("QUESTION", QUESTION).replace("CHOICES", json.dumps(CHOICES))
    return run_wrk(base, script, seconds, clients)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class UpstreamProcess:
    """bench/upstream_stub.py (tests/openai_server.py's answers on an asyncio server) in its own
    process, on an ephemeral port; `delay_ms` is the model time every answer takes."""

    def __init__(self, delay_ms: float):
        self.delay_ms = delay_ms
        self.proc = None
        self.url = ""

    def __enter__(self) -> "UpstreamProcess":
        import re
        import subprocess

        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench/upstream_stub.py"), "--port", "0",
                                      "--delay-ms", str(self.delay_ms)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/v1)", line)
        if m is None:
            self.proc.kill()
            raise SystemExit(f"error: the bench upstream did not start ({line.strip()!r}); run "
                             "bench/upstream_stub.py by hand to see why")
        self.url = m.group(1)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def distinct_script(body: dict, files: Path, name: str) -> str:
    """The wrk script sending `body` with a new question each time (split at the question text)."""
    text = json.dumps(body)
    at = text.index(QUESTION) + len(QUESTION)
    (files / f"{name}.head").write_text(text[:at])
    (files / f"{name}.tail").write_text(text[at:])
    return _WRK_DISTINCT.replace("HEADFILE", str(files / f"{name}.head")).replace("TAILFILE", str(files / f"{name}.tail"))


def chat_run(url: str, body: dict, body_file: Path, clients: int, seconds: float, requests: int,
             script: str | None = None) -> dict:
    """Closed-loop chat load: wrk when installed, else the asyncio httpx client (same question)."""
    import shutil

    if script is not None and shutil.which("wrk"):
        return run_wrk(url, script, seconds, clients)
    if shutil.which("wrk"):
        return run_wrk(url, _WRK_BODY.replace("BODYFILE", str(body_file)), seconds, clients)
    t = time.perf_counter()
    lat, err = asyncio.run(load(url, [body] * max(requests, clients * 10), clients))
    wall = time.perf_counter() - t
    return {"requests": len(lat), "rps": len(lat) / wall, "p50_ms": percentile(lat, .5), "p99_ms": percentile(lat, .99),
            "errors": err, "client": "httpx"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="chat requests per level without wrk (httpx client)")
    ap.add_argument("--seconds", type=float, default=8.0, help="chat load duration per round, level and target (wrk)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (direct, gateway) runs per row; medians reported")
    ap.add_argument("--upstream-ms", type=float, default=100.0,
                    help="model time of every upstream answer (a short vLLM answer on a GPU: ~50-200 ms)")
    ap.add_argument("--levels", default="1,8,32", help="concurrent clients, comma-separated")
    ap.add_argument("--route-requests", type=int, default=2000, help="/v1/route requests per router (httpx client)")
    ap.add_argument("--route-seconds", type=float, default=10.0, help="/v1/route load duration with wrk")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import shutil
    import statistics

    import httpx

    from gateway_process import GatewayProcess

    cache = tempfile.mkdtemp(prefix="bench-serve-cache-")
    env = {"AUDIOROUTER_CACHE_DIR": cache}
    data = clip_b64()
    chat = {"model": "test-audio-llm", "choices": CHOICES, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        {"type": "text", "text": QUESTION}]}]}
    # Straight to the upstream: the same body as the gateway forwards (prompt text with options).
    from reasoner.prompt import user_text

    direct = {"model": "test-audio-llm", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        {"type": "text", "text": user_text(QUESTION, CHOICES)}]}]}
    files = Path(tempfile.mkdtemp(prefix="bench-serve-bodies-"))
    (files / "chat.json").write_text(json.dumps(chat))
    (files / "direct.json").write_text(json.dumps(direct))
    levels = [int(x) for x in args.levels.split(",")]
    rows, route_rows = [], []
    with UpstreamProcess(args.upstream_ms) as upstream, \
            GatewayProcess(["--upstream", upstream.url, "--max-concurrency", "256"], env=env) as gw, \
            GatewayProcess(["--upstream", upstream.url, "--router", "fast", "--max-concurrency", "256"], env=env) as fast:
        actions = {}
        for name, proc in (("default", gw), ("fast", fast)):
            warm = httpx.post(proc.url + "/chat/completions", json=chat, timeout=120).json()
            actions[name] = warm["audiorouter"]["action"]
        def compare(name: str, proc, level: int, label, scripts=(None, None)) -> None:
            """`args.rounds` rounds of (direct run, then gateway run) at `level` clients; the row holds
            each figure's median over the rounds (one noisy round cannot make or break a target)."""
            rounds = []
            for _ in range(args.rounds):
                # the direct run right before each gateway run: both see the same machine load
                d = chat_run(upstream.url + "/chat/completions", direct, files / "direct.json", level, args.seconds,
                             args.requests, scripts[0])
                cpu0 = cpu_seconds(proc.proc.pid)
                g = chat_run(proc.url + "/chat/completions", chat, files / "chat.json", level, args.seconds,
                             args.requests, scripts[1])
                cpu_ms = (cpu_seconds(proc.proc.pid) - cpu0) * 1e3 / max(1, g["requests"])
                rounds.append({"direct_requests": d["requests"], "requests": g["requests"], "direct_rps": d["rps"],
                               "gateway_rps": g["rps"], "direct_p50_ms": d["p50_ms"], "direct_p99_ms": d["p99_ms"],
                               "gateway_p50_ms": g["p50_ms"], "gateway_p99_ms": g["p99_ms"],
                               "added_p50_ms": g["p50_ms"] - d["p50_ms"], "added_p99_ms": g["p99_ms"] - d["p99_ms"],
                               "ratio_p50": g["p50_ms"] / d["p50_ms"], "gateway_cpu_ms": cpu_ms,
                               "errors": d["errors"] + g["errors"], "client": g["client"]})
            row = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k not in ("errors", "client")}
            rows.append({"router": name, "clients": label, "client": rounds[0]["client"], **row,
                         "requests": sum(r["requests"] for r in rounds), "errors": sum(r["errors"] for r in rounds),
                         "rounds": rounds})

        for level in levels:
            for name, proc in (("default", gw), ("fast", fast)):
                compare(name, proc, level, level)
        # every request a new question (no decision memo): the router runs each time (wrk only)
        if shutil.which("wrk"):
            scripts = (distinct_script(direct, files, "direct"), distinct_script(chat, files, "chat"))
            for name, proc in (("default", gw), ("fast", fast)):
                compare(name, proc, levels[-1], f"{levels[-1]} distinct", scripts)
        action = ", ".join(f"{k}: {v}" for k, v in actions.items())

        for name, proc in (("default", gw), ("fast", fast)):
            # distinct questions (no two alike): no help from any memo
            bodies = [{"question": f"{QUESTION} (variant {i})", "choices": CHOICES} for i in range(args.route_requests)]
            asyncio.run(load(proc.url + "/route", bodies[:64], 32))
            if shutil.which("wrk"):
                row = route_rps_wrk(proc.base, args.route_seconds, 32)
            else:
                t = time.perf_counter()
                lat, err = asyncio.run(load(proc.url + "/route", bodies, 32))
                wall = time.perf_counter() - t
                row = {"requests": len(bodies), "rps": len(bodies) / wall, "p50_ms": percentile(lat, .5),
                       "p99_ms": percentile(lat, .99), "errors": err, "client": "httpx"}
            route_rows.append({"router": name, **row, "peak_mb": vm_hwm_mb(proc.proc.pid)})
    doc = {"action": action, "upstream_ms": args.upstream_ms, "chat": rows, "route": route_rows, "targets": TARGETS,
           "clip_bytes": len(base64.b64decode(data)), "load_avg": os.getloadavg()}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    t = Table(title=f"gateway vs straight to the upstream (routed to {action}, cached tool; "
                    f"{doc['clip_bytes'] // 1024} KB clip; upstream answers in {args.upstream_ms:g} ms; "
                    f"load {doc['load_avg'][0]:.1f})")
    for col in ("router", "clients", "requests", "direct p50", "direct p99", "gateway p50", "gateway p99",
                "added p50", "added p99", "p50 ratio", "gateway req/s", "gateway CPU ms/req", "errors"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(r["router"], str(r["clients"]), str(r["requests"]), f"{r['direct_p50_ms']:.1f}", f"{r['direct_p99_ms']:.1f}",
                  f"{r['gateway_p50_ms']:.1f}", f"{r['gateway_p99_ms']:.1f}", f"{r['added_p50_ms']:.1f}",
                  f"{r['added_p99_ms']:.1f}", f"{r['ratio_p50']:.2f}x", f"{r['gateway_rps']:.0f}",
                  f"{r['gateway_cpu_ms']:.2f}", str(r["errors"]))
    console.print(t)
    t = Table(title="/v1/route (32 clients, distinct questions, no tool)")
    for col in ("router", "client", "requests", "req/s", "p50 ms", "p99 ms", "errors", "gateway peak MB"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in route_rows:
        t.add_row(r["router"], r["client"], str(r["requests"]), f"{r['rps']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                  str(r["errors"]), f"{r['peak_mb']:.0f}")
    console.print(t)
    console.print(f"targets: added p50 <= {TARGETS['added_p50_ms']} ms, p99 <= {TARGETS['added_p99_ms']} ms at 32 "
                  f"clients; /v1/route >= {TARGETS['route_default_rps']:.0f} req/s (default), "
                  f">= {TARGETS['route_fast_rps']:.0f} (fast)")


if __name__ == "__main__":
    main()
