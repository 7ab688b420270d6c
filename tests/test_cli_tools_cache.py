"""`audiorouter tools list|run` and `audiorouter cache stats|clear|warm` with the real registered tools."""
from __future__ import annotations

import json

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


@pytest.mark.slow
def test_warm_with_a_process_pool(need_tool, clips):
    folder, paths = clips
    res = invoke("cache", "warm", folder, "--tools", TOOL, "--workers", "2", "--json")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["workers"] == 2 and s["computed"] == 3
    from toolcache import Cache

    assert Cache().stats()["entries"] == 3
