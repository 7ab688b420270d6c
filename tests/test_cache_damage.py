"""A damaged, full or read-only cache file (issue 12 items 3 and 15): every case gets its own
one-line message with the fix for THAT cause, never a traceback, never stored content quoted.

All on real SQLite files: pages overwritten in place (valid header), a value's bytes made invalid
UTF-8, SQLite's own SQLITE_FULL (via `PRAGMA max_page_count`, what a full disk returns), and a file
or folder the process really may not write (run as `nobody` when the suite runs as root, because
root ignores file permissions).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from toolcache.cache import Cache
from toolcache.errors import CacheCorrupt, CacheError, CacheNotWritable

REPO = Path(__file__).resolve().parent.parent
MARKER = "STORED-CONTENT-MARKER"  # inside every stored value: must never appear in a message
TOOL = "sound_events"
runner = CliRunner()


def _make_cache(path: Path, n: int = 300) -> list[dict]:
    c = Cache(path, max_bytes=10**12)
    parts = [{"tool": "t", "i": i} for i in range(n)]
    for p in parts:
        c.put_json("tool", p, {"i": p["i"], "text": f"{MARKER} {p['i']} " + "z" * 2000})
    c.close()  # the last connection checkpoints the WAL into the file
    return parts


def _corrupt_pages(path: Path, first: float = 0.3, last: float = 0.7) -> None:
    """Overwrite the pages between 30% and 70% of the file with noise; page 1 (header) stays valid."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    n = len(data) // page
    rng = np.random.default_rng(1)
    for k in range(max(1, int(first * n)), int(last * n)):
        data[k * page:(k + 1) * page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _one_line(msg: str) -> None:
    assert "\n" not in msg and MARKER not in msg and "Traceback" not in msg, msg


def test_corrupted_pages_never_crash_the_library(tmp_path):
    db = tmp_path / "cache.sqlite"
    parts = _make_cache(db)
    _corrupt_pages(db)
    c = Cache(db)
    outcomes = {"ok": 0, "error": 0}
    calls = [c.stats, c.integrity_check, lambda: c.put_json("tool", {"tool": "t", "i": 999}, {"v": MARKER}),
             lambda: c.keys(), lambda: c.existing([Cache.key_for(c, "tool", p) for p in parts])]
    calls += [(lambda p=p: c.get_json("tool", p)) for p in parts]
    for call in calls:
        try:
            call()
            outcomes["ok"] += 1
        except CacheError as exc:  # nothing but the domain error gets out
            _one_line(str(exc))
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # the damage was really reached
    with pytest.raises(CacheCorrupt) as info:
        c.clear()
    _one_line(str(info.value))
    assert "cache clear" in str(info.value) and "delete" not in str(info.value)
    moved = c.move_aside()
    assert moved.exists() and not db.exists()
    fresh = Cache(db)
    assert fresh.stats()["entries"] == 0 and fresh.integrity_check() == "ok"
    fresh.put_json("tool", {"tool": "t", "i": 1}, {"v": 1})
    assert fresh.get_json("tool", {"tool": "t", "i": 1}) == {"v": 1}


def test_undecodable_value_is_reported_without_quoting_it(tmp_path):
    """SQLite's 'Could not decode to UTF-8 column value with text ...' quotes the stored text: the
    message must not."""
    db = tmp_path / "cache.sqlite"
    parts = _make_cache(db, n=5)
    data = bytearray(db.read_bytes())
    at = data.find(f"{MARKER} 3 ".encode())
    assert at > 0
    data[at + len(MARKER) + 3: at + len(MARKER) + 6] = b"\xff\xfe\xfd"  # invalid UTF-8 inside the value
    db.write_bytes(bytes(data))
    c = Cache(db)
    assert c.get_json("tool", parts[0])["i"] == 0  # the other entries still hit
    with pytest.raises(CacheCorrupt) as info:
        c.get_json("tool", parts[3])
    _one_line(str(info.value))
    assert "damaged" in str(info.value) and "audiorouter cache clear" in str(info.value)


def test_disk_full_is_not_reported_as_corrupt_or_delete_the_file(tmp_path):
    db = tmp_path / "cache.sqlite"
    c = Cache(db)
    c.put_json("tool", {"tool": "t", "i": 0}, {"v": 0})
    pages = c.conn.execute("PRAGMA page_count").fetchone()[0]
    c.conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite now answers SQLITE_FULL, as on a full disk
    with pytest.raises(CacheNotWritable) as info:
        c.put_json("tool", {"tool": "t", "i": 1}, {"v": "x" * 200_000})
    msg = str(info.value)
    _one_line(msg)
    assert info.value.reason == "disk full" and "disk is full" in msg
    assert "delete" not in msg and "damaged" not in msg and "read-only" not in msg
    assert c.get_json("tool", {"tool": "t", "i": 0}) == {"v": 0}  # what was cached is intact


_READ_ONLY = r"""
import json, sys
from toolcache.cache import Cache
from toolcache.errors import CacheNotWritable
c = Cache(sys.argv[1])
out = {"hit": c.get_json("tool", {"tool": "t", "i": 7}), "read_only": c.read_only}
try:
    c.put_json("tool", {"tool": "t", "i": 1000}, {"v": 1})
    out["put"] = "stored"
except CacheNotWritable as exc:
    out["put"] = exc.reason
    out["message"] = str(exc)
out["entries"] = c.stats()["entries"]
print(json.dumps(out))
"""


def _python_for_nobody() -> str:
    """An interpreter user `nobody` may run (a venv under /root is not); toolcache.cache needs only
    the standard library, so the system python3 will do."""
    for exe in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        try:
            if exe and subprocess.run([exe, "-c", "import sqlite3"], capture_output=True, timeout=30,
                                      preexec_fn=lambda: os.setuid(65534)).returncode == 0:
                return exe
        except OSError:
            continue  # not executable for nobody
    pytest.skip("no Python interpreter that user nobody may run")


@pytest.mark.parametrize("what", ["file", "folder"])
def test_pre_warmed_read_only_cache_serves_hits(what):
    # A folder of our own under /tmp (pytest's tmp folders are private to root: `nobody` could not enter).
    base = Path(tempfile.mkdtemp(prefix="ro-cache-"))
    try:
        os.chmod(base, 0o755)
        folder = base / "shared"
        folder.mkdir()
        os.chmod(folder, 0o777 if what == "file" else 0o755)
        db = folder / "cache.sqlite"
        _make_cache(db, n=20)
        assert not Path(f"{db}-wal").exists()
        os.chmod(db, 0o444)
        if what == "folder":
            os.chmod(folder, 0o555)
        as_nobody = os.geteuid() == 0  # root ignores permissions: test as an unprivileged user
        python = _python_for_nobody() if as_nobody else sys.executable
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([python, "-c", _READ_ONLY, str(db)], capture_output=True, text=True,
                              timeout=60, env=env, preexec_fn=(lambda: os.setuid(65534)) if as_nobody else None)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        assert out["hit"]["i"] == 7 and out["read_only"] is True and out["entries"] == 20
        assert out["put"] == "read-only"
        msg = out["message"]
        _one_line(msg)
        assert "read-only" in msg and "delete" not in msg and "disk is full" not in msg
    finally:
        for p in (base / "shared", base / "shared" / "cache.sqlite"):
            if p.exists():
                os.chmod(p, stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ the CLI on a damaged cache
def _no_crash(res) -> None:
    assert res.exit_code in (0, 2), (res.exit_code, res.stdout, res.stderr)
    text = res.stdout + res.stderr
    assert "Traceback" not in text and MARKER not in text and '{"' not in res.stderr, text
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert lines[-1].startswith("error: "), res.stderr


@pytest.fixture
def need_tool():
    from toolcache import available_tools

    if TOOL not in available_tools():
        pytest.skip(f"{TOOL} is not registered yet")


def test_cli_on_corrupted_pages_never_crashes_and_clear_recovers(cache_dir, need_tool, birds_wav, tmp_path):
    db = cache_dir / "cache.sqlite"
    _make_cache(db)
    _corrupt_pages(db)
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(birds_wav, clips / "b.wav")
    for args in (["cache", "stats"], ["cache", "stats", "--json"], ["tools", "run", TOOL, str(birds_wav)],
                 ["cache", "warm", str(clips), "--tools", TOOL, "--workers", "1"]):
        _no_crash(runner.invoke(app, args))
    res = runner.invoke(app, ["cache", "clear", "--json"])
    _no_crash(res)
    assert res.exit_code == 0
    moved = Path(json.loads(res.stdout)["damaged_file_moved_to"])
    assert moved.exists() and moved.parent == cache_dir  # kept, renamed, and the user is told where
    stats = runner.invoke(app, ["cache", "stats", "--json"])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["entries"] == 0
    again = runner.invoke(app, ["tools", "run", TOOL, str(birds_wav), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["cached"] is False


def test_cli_tools_run_on_an_undecodable_entry_does_not_quote_it(cache_dir, need_tool, birds_wav):
    first = runner.invoke(app, ["tools", "run", TOOL, str(birds_wav), "--json"])
    assert first.exit_code == 0, first.stderr
    from toolcache import cache as cache_mod

    for shared in cache_mod._SHARED.values():  # let the checkpoint move the entry into the main file
        shared.close()
    db = cache_dir / "cache.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(db.read_bytes())
    at = data.find(b'"result":')
    assert at > 0
    data[at + 12: at + 15] = b"\xff\xfe\xfd"
    db.write_bytes(bytes(data))
    res = runner.invoke(app, ["tools", "run", TOOL, str(birds_wav)])
    _no_crash(res)
    assert res.exit_code == 2 and "damaged" in res.stderr and '"result"' not in res.stderr
    text = " ".join(res.stderr.split())
    assert "cache clear" in text
    clear = runner.invoke(app, ["cache", "clear"])  # a damaged value (not a damaged page): clear just works
    assert clear.exit_code == 0, clear.stderr
    res = runner.invoke(app, ["tools", "run", TOOL, str(birds_wav), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["cached"] is False


_FULL_DISK_RUN = r"""
import json, resource, sys
import toolcache
from toolcache.cache import open_cache
open_cache().stats()
# As on a full disk: no file may grow (EFBIG; Python ignores SIGXFSZ), the WAL included.
resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))
env = toolcache.run("audio_features", sys.argv[1])
print(json.dumps({"cached": env["cached"], "pitch": env["result"]["pitch_hz"], "error": env.get("cache_error")}))
"""


def test_a_result_computed_when_the_cache_cannot_store_is_returned_not_lost(tmp_path, cache_dir):
    """One question on a full (or read-only) cache: the tool output is still returned, marked
    `cache_error`, instead of being thrown away with a CacheNotWritable after computing."""
    import numpy as np
    import soundfile as sf

    from toolcache.cache import Cache

    clip = tmp_path / "tone.wav"
    sr = 16000
    t = np.arange(sr * 2) / sr
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    c = Cache(cache_dir / "cache.sqlite")   # the file exists (and is checkpointed) before the limit
    c.put_json("tool", {"tool": "t", "i": 0}, {"v": 0})
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK_RUN, str(clip)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cached"] is False and out["pitch"] is not None
    assert out["error"] and "cannot write" in out["error"] and "\n" not in out["error"]
