"""`cache export` / `cache import`: tool outputs moved between two real SQLite caches through Parquet.

Round trip into an empty cache gives only hits (same envelopes); import is idempotent; a row whose
key does not match its envelope (result edited, key swapped, envelope cut) is refused and counted.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed: pip install -e '.[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parent.parent
TOOLS = ["sound_events", "audio_features"]   # real ONNX YAMNet + librosa features: cheap on short clips
VOLATILE = ("elapsed_s", "cached")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(res, *needles):
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert sum(1 for line in lines if line.startswith("error: ")) == 1
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


def _switch(monkeypatch, folder: Path):
    monkeypatch.setenv("AUDIOROUTER_CACHE_DIR", str(folder))
    from toolcache.cache import open_cache

    return open_cache()


@pytest.fixture
def warmed(tmp_path, monkeypatch):
    """A source cache holding TOOLS x 5 clips, computed for real; returns (clips, {(tool, clip): envelope})."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_ray_warm import write_clips

    import toolcache

    clips = write_clips(tmp_path / "clips", 5, seconds=1.0, seed=3)
    _switch(monkeypatch, tmp_path / "src")
    envs = {(t, c): toolcache.run(t, c) for t in TOOLS for c in clips}
    assert not any(e["cached"] for e in envs.values())
    return clips, envs


def _strip(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in VOLATILE}


def test_export_import_round_trip_gives_only_hits(warmed, tmp_path, monkeypatch):
    import toolcache

    clips, envs = warmed
    out = tmp_path / "tools.parquet"
    res = invoke("cache", "export", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["rows"] == len(envs) and out.is_file() and doc["bytes"] > 0
    table = pq.read_table(out)
    assert table.column_names == ["key", "tool", "tool_version", "backend", "audio_sha256", "bytes", "sha256",
                                  "envelope"]
    assert sorted(table.column("key").to_pylist()) == sorted(toolcache.cache_key(t, c) for t, c in envs)

    dest = _switch(monkeypatch, tmp_path / "dest")   # an empty cache on "another machine"
    assert dest.stats()["entries"] == 0
    res = invoke("cache", "import", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["imported"], doc["present"], doc["refused"], doc["stale"]) == (len(envs), 0, 0, 0)
    for (t, c), env in envs.items():
        hit = toolcache.run(t, c)
        assert hit["cached"] is True, (t, c)              # only hits: nothing recomputed
        assert _strip(hit) == _strip(env)                # and the very same envelope

    res = invoke("cache", "import", out, "--json")    # idempotent: a second import stores nothing new
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and (doc["imported"], doc["present"]) == (0, len(envs))
    assert dest.stats()["entries"] == len(envs)


def test_export_one_tool(warmed, tmp_path):
    clips, envs = warmed
    out = tmp_path / "one.parquet"
    res = invoke("cache", "export", out, "--tool", "sound_events")
    assert res.exit_code == 0, res.stderr
    assert "exported 5 tool outputs of sound_events" in res.stdout
    assert set(pq.read_table(out).column("tool").to_pylist()) == {"sound_events"}


def _rewrite(src: Path, dest: Path, edit) -> None:
    rows = pq.read_table(src).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(src)), dest)


def test_tampered_rows_are_refused_and_counted(warmed, tmp_path, monkeypatch):

    clips, envs = warmed
    good = tmp_path / "good.parquet"
    assert invoke("cache", "export", good).exit_code == 0
    victims = {}

    def edit(rows):
        # row 0: its result edited in transit (bytes fixed up, sha256 column not): damaged, refused.
        env = json.loads(rows[0]["envelope"])
        env["result"][next(iter(env["result"]))] = "forged"
        rows[0]["envelope"] = json.dumps(env, separators=(",", ":"))
        rows[0]["bytes"] = len(rows[0]["envelope"].encode())
        # row 1: stored under another clip's key (a swapped key): the recomputed key differs.
        rows[1]["key"] = rows[2]["key"]
        # row 3: envelope cut in transit (bytes column kept).
        rows[3]["envelope"] = rows[3]["envelope"][:-40]
        # row 4: envelope re-labelled as another clip's output, bytes and sha256 recomputed to match:
        # only the key check can tell, and it does (the key names the original clip).
        env = json.loads(rows[4]["envelope"])
        env["audio_sha256"] = rows[2]["audio_sha256"] if rows[2]["audio_sha256"] != env["audio_sha256"] else "0" * 64
        rows[4]["envelope"] = json.dumps(env, separators=(",", ":"))
        rows[4]["bytes"] = len(rows[4]["envelope"].encode())
        rows[4]["sha256"] = hashlib.sha256(rows[4]["envelope"].encode()).hexdigest()
        victims.update({r: rows[r]["key"] for r in (0, 2, 3, 4)})
        victims["real_env_2"] = json.loads(rows[2]["envelope"])

    bad = tmp_path / "bad.parquet"
    _rewrite(good, bad, edit)
    dest = _switch(monkeypatch, tmp_path / "dest")
    res = invoke("cache", "import", bad)
    line = _one_line_error(res, "4 of 10 rows refused", "key check", "row 0", "damaged in transit", "re-export")
    assert "imported 6 tool outputs" in res.stdout and "4 refused" in res.stdout, (res.stdout, line)
    assert dest.stats()["entries"] == 6
    assert not dest.has_key(victims[3]) and not dest.has_key(victims[4])
    assert dest.get_by_key(victims[0]) is None        # the forged result is not stored under the real key
    # The row carrying another clip's key did not overwrite that clip's real output.
    assert _strip(dest.get_by_key(victims[2])) == _strip(victims["real_env_2"])


def test_import_and_export_bad_input_is_one_line(warmed, tmp_path):
    _one_line_error(invoke("cache", "export", tmp_path / "x.txt"), "does not end in .parquet")
    _one_line_error(invoke("cache", "export", tmp_path / "no" / "x.parquet"), "does not exist")
    _one_line_error(invoke("cache", "export", tmp_path / "x.parquet", "--tool", "nope"), "available tools")
    _one_line_error(invoke("cache", "import", tmp_path / "none.parquet"), "does not exist", "cache export")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    _one_line_error(invoke("cache", "import", junk), "not a readable Parquet file")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(invoke("cache", "import", empty), "no *.parquet files")
    no_env = tmp_path / "other.parquet"
    pq.write_table(pa.table({"key": ["a"], "value": ["b"]}), no_env)
    _one_line_error(invoke("cache", "import", no_env), "has no column envelope")


def test_warm_engine_errors_are_one_line(warmed, tmp_path):
    clips, _ = warmed
    folder = clips[0].parent
    _one_line_error(invoke("cache", "warm", folder, "-t", "sound_events", "--engine", "spark"),
                    "--engine 'spark' is not known; valid: local, ray")
    _one_line_error(invoke("cache", "warm", folder, "-t", "sound_events", "--parquet", tmp_path / "p"),
                    "--parquet only apply to --engine ray")
    # ray not installed (import blocked in a fresh interpreter): the fix names the extra.
    code = ("import sys; sys.modules['ray'] = None; from cli.main import main; "
            f"sys.argv = ['audiorouter', 'cache', 'warm', {str(folder)!r}, '-t', 'sound_events', '--engine', 'ray']; "
            "main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: ray is not installed (--engine ray needs ray[data] and pyarrow); pip install -e '.[ray]'")
    assert "Traceback" not in proc.stderr
