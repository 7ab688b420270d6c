"""`audiorouter tools list|run` and `audiorouter cache stats|clear|warm` with the real registered tools."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
TOOL = "sound_events"  # real YAMNet ONNX tool, ~2 ms per clip once loaded


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(res, *needles):
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert res.stdout == ""


@pytest.fixture
def need_tool():
    from toolcache import available_tools

    if TOOL not in available_tools():
        pytest.skip(f"{TOOL} is not registered yet")


@pytest.fixture
def clips(tmp_path):
    """Three short synthetic clips in a nested folder, plus a non-audio file that warm must ignore."""
    folder = tmp_path / "clips"
    (folder / "nested").mkdir(parents=True)
    sr = 16000
    t = np.arange(2 * sr) / sr
    paths = []
    for i, name in enumerate(["a.wav", "b.flac", "nested/c.wav"]):
        p = folder / name
        sf.write(p, (0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t)).astype(np.float32), sr)
        paths.append(p)
    (folder / "notes.txt").write_text("not audio")
    return folder, paths


def test_tools_list_json_matches_registry():
    from toolcache import available_tools

    res = invoke("tools", "list", "--json")
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)["tools"]
    assert [r["name"] for r in rows] == available_tools()
    for r in rows:
        assert r["description"] and r["backend"] and r["version"] and "params" in r
    table = invoke("tools", "list")
    assert table.exit_code == 0
    for name in available_tools():
        assert name in table.stdout


def test_tools_run_twice_second_is_cached(need_tool, birds_wav):
    first = invoke("tools", "run", TOOL, birds_wav, "--json")
    assert first.exit_code == 0, first.stderr
    env = json.loads(first.stdout)
    assert env["tool"] == TOOL and env["cached"] is False and env["result"]
    second = invoke("tools", "run", TOOL, birds_wav, "--json")
    env2 = json.loads(second.stdout)
    assert env2["cached"] is True and env2["result"] == env["result"]
    assert env2["elapsed_s"] < 0.25  # a hit: no decode, no model (typically well under 1 ms)
    table = invoke("tools", "run", TOOL, birds_wav)
    assert table.exit_code == 0 and "served from the cache" in table.stdout
    # A changed parameter is a different result: a miss, then a hit.
    p3 = json.loads(invoke("tools", "run", TOOL, birds_wav, "--param", "top_k=3", "--json").stdout)
    assert p3["cached"] is False and p3["params"]["top_k"] == 3
    # --no-cache recomputes.
    assert json.loads(invoke("tools", "run", TOOL, birds_wav, "--no-cache", "--json").stdout)["cached"] is False

    stats = json.loads(invoke("cache", "stats", "--json").stdout)
    assert {"namespace": "tool", "tool": TOOL, "entries": 2} == {k: v for k, v in stats["by_tool"][0].items() if k != "bytes"}
    assert stats["max_bytes"] > 0 and stats["path"].endswith("cache.sqlite")
    assert "cache" in invoke("cache", "stats").stdout
    cleared = json.loads(invoke("cache", "clear", "--json").stdout)
    assert cleared["removed"] == 2
    assert json.loads(invoke("cache", "stats", "--json").stdout)["entries"] == 0


def test_tools_run_bad_inputs_exit_2_with_one_line(need_tool, tmp_path, speech_wav):
    text = tmp_path / "notes.wav"
    text.write_text("definitely not audio\n" * 10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(speech_wav.read_bytes()[:40])
    _one_line_error(invoke("tools", "run", TOOL, tmp_path / "missing.wav"), "not found", "missing.wav")
    _one_line_error(invoke("tools", "run", TOOL, tmp_path), "directory")
    _one_line_error(invoke("tools", "run", TOOL, empty), "empty", "empty.wav")
    _one_line_error(invoke("tools", "run", TOOL, text), "cannot decode", "notes.wav")
    _one_line_error(invoke("tools", "run", TOOL, cut), "cannot decode", "cut.wav")
    nan = tmp_path / "nan.wav"
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    x[16000:17000] = np.nan
    sf.write(nan, x, 16000, subtype="FLOAT")
    _one_line_error(invoke("tools", "run", TOOL, nan), "1000 non-finite samples", "nan.wav")
    _one_line_error(invoke("tools", "run", "no_such_tool", speech_wav), "unknown tool", "available tools")
    _one_line_error(invoke("tools", "run", TOOL, speech_wav, "--param", "top_k=abc"), "integer")
    _one_line_error(invoke("tools", "run", TOOL, speech_wav, "--param", "nope=1"), "valid parameters")
    _one_line_error(invoke("tools", "run", TOOL, speech_wav, "--max-seconds", "-3"), "positive")
    from toolcache import Cache

    assert Cache().stats()["entries"] == 0  # nothing failed got cached


def test_warm_folder_then_resume(need_tool, clips):
    folder, paths = clips
    res = invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "1", "--json")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["files"] == 3 and s["computed"] == 3 and s["cached"] == 0 and s["failed"] == 0
    again = json.loads(invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "1", "--json").stdout)
    assert again["computed"] == 0 and again["cached"] == 3
    # What warm stored is what `tools run` then serves.
    env = json.loads(invoke("tools", "run", TOOL, paths[2], "--json").stdout)
    assert env["cached"] is True


def test_warm_jsonl_dataset_relative_paths_and_audio_root(need_tool, clips, tmp_path):
    folder, paths = clips
    ds = tmp_path / "data" / "questions.jsonl"
    ds.parent.mkdir()
    rows = [{"id": i, "audio": str(p.relative_to(folder))} for i, p in enumerate(paths)] + [{"id": 9, "audio": "a.wav"}]
    ds.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # Paths are relative to the dataset's folder by default: there they do not exist.
    _one_line_error(invoke("cache", "warm", ds, "--tools", TOOL, "--workers", "1"), "3 of 3", "--audio-root")
    res = invoke("cache", "warm", ds, "--tools", TOOL, "--workers", "1", "--audio-root", folder, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["files"] == 3  # the duplicate row is warmed once
    as_json = tmp_path / "data" / "questions.json"
    as_json.write_text(json.dumps([{"audio": str(p)} for p in paths]))
    s = json.loads(invoke("cache", "warm", as_json, "--tools", TOOL, "--workers", "1", "--json").stdout)
    assert s["cached"] == 3 and s["computed"] == 0


def test_warm_bad_sources(need_tool, tmp_path, clips):
    folder, paths = clips
    empty = tmp_path / "nothing"
    empty.mkdir()
    _one_line_error(invoke("cache", "warm", empty, "--tools", TOOL), "no audio files")
    _one_line_error(invoke("cache", "warm", tmp_path / "nope.jsonl", "--tools", TOOL), "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "x.wav"}\n{"question": "no audio"}\n')
    (tmp_path / "x.wav").write_bytes(paths[0].read_bytes())
    _one_line_error(invoke("cache", "warm", bad, "--tools", TOOL), "line 2", "'audio'")
    _one_line_error(invoke("cache", "warm", folder, "--tools", "nope"), "unknown tool")
    _one_line_error(invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "0"), "at least 1")


def test_warm_keeps_going_past_a_broken_file_and_exits_2(need_tool, clips):
    folder, paths = clips
    (folder / "broken.wav").write_text("not audio")
    res = invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "1", "--json")
    assert res.exit_code == 2
    s = json.loads(res.stdout)
    assert s["computed"] == 3 and s["failed"] == 1 and s["failures"][0]["path"].endswith("broken.wav")
    assert res.stderr.strip().splitlines()[-1].startswith("error: 1 of 4 tool outputs failed")


def test_warm_picks_the_worker_count_by_job_size(need_tool, clips, tmp_path):
    # 3 clips: a worker process would cost more to start than the job; warm runs in-process.
    folder, paths = clips
    s = json.loads(invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "2", "--json").stdout)
    assert s["workers"] == 1 and s["workers_asked"] == 2 and s["computed"] == 3
    from toolcache.warm import MIN_FILES_PER_WORKER, workers_for

    assert workers_for(2 * MIN_FILES_PER_WORKER, 2) == min(2, os.cpu_count() or 1)
    assert workers_for(2 * MIN_FILES_PER_WORKER - 1, 2) == 1
    assert workers_for(1000, 1) == 1


def test_warm_with_a_process_pool(need_tool, tmp_path):
    from toolcache import Cache
    from toolcache.warm import MIN_FILES_PER_WORKER

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: warm never starts a pool")
    folder = tmp_path / "many"
    folder.mkdir()
    n = 2 * MIN_FILES_PER_WORKER
    t = np.arange(16000) / 16000
    for i in range(n):
        sf.write(folder / f"c{i:02d}.wav", (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t)).astype(np.float32), 16000)
    res = invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "2", "--json")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["workers"] == 2 and s["computed"] == n
    assert Cache().stats()["entries"] == n


def test_tools_list_never_cuts_a_word_at_80_columns():
    rows = json.loads(invoke("tools", "list", "--json").stdout)["tools"]
    res = runner.invoke(app, ["tools", "list"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = res.stdout
    for r in rows:
        params = " ".join(f"{k}={json.dumps(v)}" for k, v in r["params"].items())
        for word in f"{r['name']} {r['description']} {r['backend']} {params}".split():
            assert word in text, f"{word!r} is cut across lines at 80 columns"


def test_tools_run_says_once_that_a_wav_is_shorter_than_its_header(need_tool, tmp_path):
    full = tmp_path / "full.wav"
    t = np.arange(10 * 16000) / 16000
    sf.write(full, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 1000])
    for args in ((), ("--json",)):  # computed, then served from the cache: said both times
        res = invoke("tools", "run", TOOL, cut, *args)
        assert res.exit_code == 0, res.stderr
        warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "shorter than its header" in warnings[0] and "cut.wav" in warnings[0]
        assert "10.00 s" in warnings[0]
    env = json.loads(res.stdout)
    assert env["audio"]["header_mismatch"] is True and env["cached"] is True
    ok = invoke("tools", "run", TOOL, full, "--json")
    assert ok.exit_code == 0 and "warning" not in ok.stderr


def test_max_seconds_cap_in_the_cli(need_tool, clips, birds_wav):
    from toolcache.audio import MAX_SECONDS_CAP

    folder, _ = clips
    _one_line_error(invoke("tools", "run", TOOL, birds_wav, "--max-seconds", "7200"),
                    "cap", f"{MAX_SECONDS_CAP:g}", "memory")
    _one_line_error(invoke("cache", "warm", folder, "--tools", TOOL, "--max-seconds", "7200"),
                    "--max-seconds", "cap", f"{MAX_SECONDS_CAP:g}")
    assert invoke("tools", "run", TOOL, birds_wav, "--max-seconds", f"{MAX_SECONDS_CAP:g}").exit_code == 0


def test_warm_dataset_with_a_missing_clip_warms_the_rest_and_lists_it(need_tool, clips, tmp_path):
    folder, paths = clips
    ds = tmp_path / "ds.jsonl"
    rows = [{"audio": str(p.relative_to(folder))} for p in paths] + [{"audio": "gone/lost.wav"}]
    ds.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = invoke("cache", "warm", ds, "--tools", TOOL, "--workers", "1", "--audio-root", folder, "--json")
    assert res.exit_code == 2
    s = json.loads(res.stdout)  # the summary is printed before the error
    assert s["files"] == 3 and s["computed"] == 3 and s["missing"] == [str(folder / "gone" / "lost.wav")]
    err = res.stderr.strip().splitlines()
    assert [line for line in err if line.startswith("missing: ")] == [f"missing: {folder / 'gone' / 'lost.wav'}"]
    last = err[-1]
    assert last.startswith("error: 1 of 4 audio files named in") and "lost.wav" in last
    assert "pass --audio-root" not in last and f"--audio-root {folder}" in last  # given: not suggested again
    assert "the other 3 were warmed" in last
    from toolcache import Cache

    assert Cache().stats()["entries"] == 3
    # Without --audio-root (paths relative to the dataset's folder, where none exist): the hint names it.
    ds2 = folder / "ds.jsonl"
    ds2.write_text(ds.read_text())
    res = invoke("cache", "warm", ds2, "--tools", TOOL, "--workers", "1")
    assert res.exit_code == 2
    last = res.stderr.strip().splitlines()[-1]
    assert "1 of 4" in last and "pass --audio-root FOLDER" in last


def test_warm_says_once_per_file_that_it_is_shorter_than_its_header(need_tool, clips):
    folder, paths = clips
    full = folder / "long.wav"
    t = np.arange(10 * 16000) / 16000
    sf.write(full, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000, subtype="PCM_16")
    (folder / "cut.wav").write_bytes(full.read_bytes()[: 44 + 3200])
    full.unlink()
    res = invoke("cache", "warm", folder, "--tools", f"{TOOL},sound_duration", "--workers", "1", "--json")
    assert res.exit_code == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "cut.wav" in warnings[0] and "shorter than its header" in warnings[0]
    s = json.loads(res.stdout)
    assert [w["path"] for w in s["warnings"]] == [str(folder / "cut.wav")]
