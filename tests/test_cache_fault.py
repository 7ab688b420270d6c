"""Fault test: 4 processes warm the same cache at once with a real tool; one is SIGKILLed mid-way.

Afterwards the SQLite file must open cleanly (`PRAGMA integrity_check` = ok), every key a process
reported (printed only after its transaction committed) must be present with a complete value,
and a re-run must resume: only the clips the killed process never got to remain to compute.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

TOOL = "sound_events"  # real YAMNet ONNX tool; cheapest cold start of the registered tools

_WORKER = r"""
import json, random, sys
from toolcache.warm import warm
files = json.loads(sys.argv[1])
random.Random(int(sys.argv[2])).shuffle(files)        # each process walks the clips in its own order
def on_file(res):
    for tool, key in res["keys"].items():
        print("WROTE", key, flush=True)                # printed after the commit: it must survive
    for tool, err in res["errors"].items():
        print("FAILED", tool, err, flush=True)
warm(files, [sys.argv[3]], workers=1, on_file=on_file)
print("DONE", flush=True)
"""


def _clips(folder, n=12, seconds=20.0, sr=16000):
    rng = np.random.default_rng(7)
    paths = []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 97 * i) * t) * (rng.random() > 0.3)
        noise = (0.02 + 0.02 * i) * rng.standard_normal(t.size)
        p = folder / f"clip{i:02d}.wav"
        sf.write(p, (tone + noise).astype(np.float32), sr)
        paths.append(str(p))
    return paths


@pytest.mark.slow
def test_sigkill_during_concurrent_warm_loses_nothing_committed(tmp_path, cache_dir):
    pytest.importorskip("onnxruntime")
    from toolcache import available_tools

    if TOOL not in available_tools():
        pytest.skip(f"{TOOL} is not registered yet")
    files = _clips(tmp_path)
    env = dict(os.environ, AUDIOROUTER_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(files), str(seed), TOOL],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in range(4)]
    victim = procs[0]
    victim_lines = []
    deadline = time.monotonic() + 90
    # Kill the victim right after its first committed write, while it has 11 clips to go.
    while time.monotonic() < deadline:
        line = victim.stdout.readline()
        if not line:
            break
        victim_lines.append(line)
        if line.startswith("WROTE"):
            os.kill(victim.pid, signal.SIGKILL)
            break
    victim_rest, _ = victim.communicate(timeout=30)
    victim_lines.extend(victim_rest.splitlines(keepends=True))
    assert victim.returncode == -signal.SIGKILL, "".join(victim_lines)
    assert not any(l.startswith("DONE") for l in victim_lines), "victim finished before it was killed"

    reported = {l.split()[1] for l in victim_lines if l.startswith("WROTE")}
    assert 1 <= len(reported) < len(files)  # killed mid-way, with clips still to do
    for p in procs[1:]:
        out, err = p.communicate(timeout=max(5, deadline - time.monotonic()))
        assert p.returncode == 0, err[-2000:]
        assert "DONE" in out and "FAILED" not in out, out
        reported |= {l.split()[1] for l in out.splitlines() if l.startswith("WROTE")}
    assert len(reported) == len(files)  # every clip has exactly one key for this tool

    db = cache_dir / "cache.sqlite"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = dict(con.execute("SELECT key, value FROM entries WHERE namespace='tool'").fetchall())
    assert reported <= set(rows)
    for key in reported:
        value = json.loads(rows[key])  # complete JSON, not a half-written row
        assert value["tool"] == TOOL and value["result"]
    total = con.execute("SELECT SUM(size) FROM entries").fetchone()[0]
    assert total == con.execute("SELECT value FROM meta WHERE name='total_size'").fetchone()[0]
    con.close()

    # Resume: everything is cached now, so a re-run computes nothing.
    from toolcache.warm import warm

    summary = warm(files, [TOOL], workers=1)
    assert summary["cached"] == len(files) and summary["computed"] == 0 and summary["failed"] == 0
