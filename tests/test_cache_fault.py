"""Fault tests: processes are SIGKILLed *inside* a cache write transaction, and mid-way through a
concurrent warm.

Kill inside the write: `AUDIOROUTER_CACHE_FAULT=<point>` (read by toolcache.cache, test-only) makes
the process SIGKILL itself between two statements of one transaction: after the entry row is
written but before the counters are, just before COMMIT, and between the deletes of an eviction
batch and their counter update. Afterwards `PRAGMA integrity_check` is ok, the counters
(`meta.total_size`, `meta.entries`, per-tool `tally`) equal the rows, and the entry is whole or
absent. (Planting "entry INSERT and counters in two transactions" makes these tests fail.)

Concurrent warm: 4 processes warm the same cache with a real tool; one is killed after its first
committed write. Every key a process reported (printed only after its commit) must be present with
a complete value, and a re-run must compute exactly the clips nobody stored: the victim's share of
the work is not covered by the other workers, so the check depends on what the victim left.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = "sound_events"  # real YAMNet ONNX tool; cheapest cold start of the registered tools

_WORKER = r"""
import json, sys
from toolcache.warm import warm
files = json.loads(sys.argv[1])                       # walked in the given order
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


def test_sigkill_during_concurrent_warm_loses_nothing_committed(tmp_path, cache_dir):
    pytest.importorskip("onnxruntime")
    from toolcache import available_tools

    if TOOL not in available_tools():
        pytest.skip(f"{TOOL} is not registered yet")
    files = _clips(tmp_path)
    # Extract the model under <cache>/models once, before the workers start (in a fresh process: this
    # one may hold a model session from another test's cache folder): this test is about the cache
    # file, not about four processes extracting the same model at once.
    from toolcache.cache import Cache

    env = dict(os.environ, AUDIOROUTER_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", "import sys, toolcache; toolcache.run(sys.argv[1], sys.argv[2], cache=False)",
                    TOOL, files[0]], env=env, check=True, capture_output=True, timeout=120)
    Cache().clear()
    # The victim walks every clip in order; the three others share only the last four clips, so
    # clips 0..7 are stored only if the victim got to them before it was killed.
    shares = [files, files[8:10], files[10:11], files[11:12]]
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(share), str(seed), TOOL],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed, share in enumerate(shares)]
    victim = procs[0]
    victim_lines = []
    deadline = time.monotonic() + 90
    # Kill the victim right after its second committed write, while it has 10 clips to go.
    while time.monotonic() < deadline:
        line = victim.stdout.readline()
        if not line:
            break
        victim_lines.append(line)
        if sum(l.startswith("WROTE") for l in victim_lines) == 2:
            os.kill(victim.pid, signal.SIGKILL)
            break
    victim_rest, _ = victim.communicate(timeout=30)
    victim_lines.extend(victim_rest.splitlines(keepends=True))
    assert victim.returncode == -signal.SIGKILL, "".join(victim_lines)
    assert not any(l.startswith("DONE") for l in victim_lines), "victim finished before it was killed"

    victim_keys = {l.split()[1] for l in victim_lines if l.startswith("WROTE")}
    assert len(victim_keys) == 2
    others = set()
    for p in procs[1:]:
        out, err = p.communicate(timeout=max(5, deadline - time.monotonic()))
        assert p.returncode == 0, err[-2000:]
        assert "DONE" in out and "FAILED" not in out, out
        others |= {l.split()[1] for l in out.splitlines() if l.startswith("WROTE")}
    assert len(others) == 4

    db = cache_dir / "cache.sqlite"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = dict(con.execute("SELECT key, value FROM entries WHERE namespace='tool'").fetchall())
    reported = victim_keys | others
    assert reported <= set(rows)
    for key in rows:
        value = json.loads(rows[key])  # complete JSON, not a half-written row
        assert value["tool"] == TOOL and value["result"]
    # At most one more clip than reported: the one the victim may have committed before the kill landed.
    assert len(reported) <= len(rows) <= len(reported) + 1
    _assert_counters_match(con)
    con.close()

    # Resume computes exactly the clips nothing stored: what the victim never got to.
    from toolcache.warm import warm

    summary = warm(files, [TOOL], workers=1)
    missing = len(files) - len(rows)
    assert missing >= 5  # the victim was killed with clips 2..7 (at least 5 of them) still to do
    assert summary["computed"] == missing and summary["cached"] == len(rows) and summary["failed"] == 0


def _assert_counters_match(con) -> None:
    n, total = con.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
    meta = dict(con.execute("SELECT name, value FROM meta").fetchall())
    assert meta["total_size"] == total and meta["entries"] == n, (meta, n, total)
    tally = {(a, b): (k, v) for a, b, k, v in con.execute("SELECT * FROM tally WHERE entries != 0")}
    assert tally == {(a, b): (k, v) for a, b, k, v in con.execute(
        "SELECT namespace, tool, COUNT(*), SUM(size) FROM entries GROUP BY namespace, tool")}


_KILLED_WRITER = r"""
import os, sys
from toolcache.cache import Cache, FAULT_ENV
path, point = sys.argv[1], sys.argv[2]
c = Cache(path)
for i in range(20):                                    # committed before the fault is armed
    c.put_json("tool", {"tool": "t", "i": i}, {"i": i, "pad": "x" * 3000})
print("COMMITTED", flush=True)
os.environ[FAULT_ENV] = point                          # read when a Cache is created
armed = Cache(path, max_bytes=int(sys.argv[3]))
if point.startswith("evict"):
    armed.evict()
else:
    armed.put_many_json("tool", [({"tool": "t", "i": 100}, {"i": 100, "pad": "y" * 5000}),
                                 ({"tool": "u", "i": 101}, {"i": 101})])
print("SURVIVED", flush=True)
"""


@pytest.mark.parametrize("point", ["put:after-insert", "put:before-commit", "evict:mid"])
def test_sigkill_inside_the_write_transaction_leaves_whole_or_nothing(tmp_path, point):
    db = tmp_path / "cache.sqlite"
    limit = 10**12 if point.startswith("put") else 20_000  # evict: far over the limit, many batches to go
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("AUDIOROUTER_CACHE_FAULT", None)
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db), point, str(limit)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "COMMITTED" in proc.stdout and "SURVIVED" not in proc.stdout

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    _assert_counters_match(con)
    values = [json.loads(v) for (v,) in con.execute("SELECT value FROM entries")]
    con.close()
    # The killed transaction left nothing: the 20 committed entries, whole, and no part of the rest.
    assert sorted(v["i"] for v in values) == list(range(20))
    assert all(v["pad"] == "x" * 3000 for v in values)
    from toolcache.cache import Cache

    after = Cache(db)  # and the file is usable as it is
    after.put_json("tool", {"tool": "t", "i": 100}, {"i": 100})
    assert after.get_json("tool", {"tool": "t", "i": 100}) == {"i": 100}
