"""`cache warm` under faults, with real processes: its parent SIGKILLed, the disk filling up.

- SIGKILL of a `cache warm --workers 2` parent: the workers must not outlive it (they used to stay
  alive forever with ppid 1, ~330 MB each).
- The cache file cannot grow any more (RLIMIT_FSIZE on the warm process: writes past the limit
  fail with EFBIG, as on a full disk): warm must stop at the first cache write error, not compute
  every remaining clip and discard it, and its summary must count exactly what was stored.
"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
TOOL = "sound_events"  # real YAMNet ONNX tool


def _need_tool():
    from toolcache import available_tools

    if TOOL not in available_tools():
        pytest.skip(f"{TOOL} is not registered")


def _clips(folder: Path, n: int, seconds: float, sr: int = 16000) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (150 + 41 * i) * t) + 0.05 * rng.standard_normal(t.size)
        p = folder / f"c{i:03d}.wav"
        sf.write(p, x.astype(np.float32), sr)
        out.append(p)
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields[0] = state, fields[1] = ppid
            kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (only its exit status is left)


def _entries(cache_dir: Path) -> int:
    db = cache_dir / "cache.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _warm_cmd(folder: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "cli.main", "cache", "warm", str(folder), "--tools", TOOL,
            "--workers", str(workers), "--json"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_warm_parent_leaves_no_worker_alive(tmp_path, cache_dir):
    _need_tool()
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: warm never starts a pool")
    folder = tmp_path / "clips"
    _clips(folder, 120, 10.0)  # minutes of work for 2 workers: still running when killed
    env = dict(os.environ, AUDIOROUTER_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))
    parent = subprocess.Popen(_warm_cmd(folder, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, cwd=REPO)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        # Kill once the workers are up and working: the first output committed by one of them.
        while time.monotonic() < deadline and parent.poll() is None:
            workers |= set(_children(parent.pid))
            if len(workers) >= 2 and _entries(cache_dir) >= 1:
                break
            time.sleep(0.05)
        assert parent.poll() is None, "warm finished before it could be killed"
        assert len(workers) >= 2 and _entries(cache_dir) >= 1, "the workers never started"
        workers |= set(_children(parent.pid))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        survivors = [w for w in workers if _alive(w)]
        assert not survivors, f"{len(survivors)} warm worker(s) outlived their SIGKILLed parent by 5 s"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        for w in workers:  # never leave a process behind, even when the test fails
            if _alive(w):
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    # What the workers committed before the kill is intact and a re-run resumes from it.
    con = sqlite3.connect(cache_dir / "cache.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def _limit_file_size(limit: int):
    def preexec() -> None:
        # As on a full disk: any write past `limit` bytes of a file fails (EFBIG; Python ignores SIGXFSZ).
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("workers", [1, 2])
def test_warm_stops_at_the_first_cache_write_error_and_counts_what_was_stored(tmp_path, cache_dir, workers):
    _need_tool()
    if workers > 1 and (os.cpu_count() or 1) < 2:
        pytest.skip("one core: warm never starts a pool")
    n = 40
    folder = tmp_path / "clips"
    _clips(folder, n, 2.0)
    # With no limit: create the cache file and extract the YAMNet model under <cache>/models (one
    # entry for a clip of its own), so that under the limit only the cache's growth is refused.
    # In a fresh process: this one may hold a model session extracted under another test's cache.
    env = dict(os.environ, AUDIOROUTER_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))
    first = _clips(tmp_path / "first", 1, 3.0)[0]
    subprocess.run([sys.executable, "-m", "cli.main", "tools", "run", TOOL, str(first), "--json"],
                   env=env, cwd=REPO, check=True, capture_output=True, timeout=120)
    con = sqlite3.connect(cache_dir / "cache.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file: the limit is on growth
    con.close()
    before = _entries(cache_dir)
    assert before == 1
    size = os.path.getsize(cache_dir / "cache.sqlite")
    t = time.monotonic()
    res = subprocess.run(_warm_cmd(folder, workers), capture_output=True, text=True, env=env, cwd=REPO,
                         preexec_fn=_limit_file_size(size + 192 * 1024), timeout=240)
    elapsed = time.monotonic() - t
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    line = errors[0]
    assert "stopped at the first cache error" in line, res.stderr[-3000:]
    stored = int(re.search(r"\((\d+) new tool outputs stored", line).group(1))
    summary = json.loads(res.stdout)  # what was stored is printed before the error
    assert summary["computed"] == stored and summary["stopped"]
    assert summary["computed"] + summary["cached"] + summary["failed"] + summary["skipped"] == n
    # It stopped: far fewer clips were attempted than the 40 (each later clip would fail the same way).
    assert 1 <= stored < n - 10, line
    assert summary["skipped"] >= n - stored - 2 * workers - 1
    assert "the others are cached" not in res.stderr
    # The count is true: exactly that many outputs are in the cache.
    assert _entries(cache_dir) == before + stored
    assert elapsed < 120
