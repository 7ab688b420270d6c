"""`cache warm --engine ray` on a real local Ray runtime (2 CPUs, 127.0.0.1, one per module).

Ray start-up costs ~10 s on 2 shared cores, so the runtime is module-scoped and the tests are few:
same keys and identical envelopes as the process pool (+ a re-run computes nothing), and resume
after a real SIGKILL of a driver process (the re-run computes only what had not landed).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app

pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
pytest.importorskip("pyarrow", reason="pyarrow is not installed: pip install -e '.[ray]'")

REPO = Path(__file__).resolve().parent.parent
TOOLS = ["audio_features", "sound_duration"]   # cheap: ~0.15 s and ~0.01 s per 2-s clip (no ASR)
N_CLIPS = 20
VOLATILE = ("elapsed_s", "cached")              # timing and hit flag differ between runs by design


def write_clips(folder: Path, n: int, seconds: float = 2.0, seed: int = 0) -> list[Path]:
    """n distinct short WAV clips: a tone (its pitch differs per clip) plus noise, 16 kHz mono."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (220 + 37 * i) * t) + 0.05 * rng.standard_normal(t.size)
        if i % 3 == 0:
            x[: sr // 2] = 0.0  # some leading silence: the outputs differ in more than pitch
        p = folder / f"clip{i:03d}.wav"
        sf.write(p, x.astype(np.float32), sr)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                   object_store_memory=256 * 1024 * 1024, log_to_driver=False, logging_level="ERROR")
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    return write_clips(tmp_path_factory.mktemp("clips"), N_CLIPS)


def _use_cache(monkeypatch, folder: Path):
    monkeypatch.setenv("AUDIOROUTER_CACHE_DIR", str(folder))
    from toolcache.cache import open_cache

    return open_cache()


def _stored(cache) -> dict[str, dict]:
    out = {}
    for k in cache.keys("tool"):
        env = cache.get_by_key(k)
        out[k] = {f: v for f, v in env.items() if f not in VOLATILE}
    return out


def test_ray_warm_same_keys_and_results_as_process_pool(ray_address, clips, tmp_path, monkeypatch):
    from toolcache.ray_warm import RayWarmOptions, warm_ray
    from toolcache.transfer import read_keys
    from toolcache.warm import warm

    pool_cache = _use_cache(monkeypatch, tmp_path / "pool")
    s_pool = warm(clips, TOOLS, workers=2)
    assert s_pool["computed"] == N_CLIPS * len(TOOLS) and s_pool["failed"] == 0
    pool = _stored(pool_cache)

    ray_cache = _use_cache(monkeypatch, tmp_path / "ray")
    seen = []
    opts = RayWarmOptions(actors=2, batch_size=4, parquet=str(tmp_path / "out"))
    s_ray = warm_ray(clips, TOOLS, opts, on_file=seen.append)
    assert s_ray["computed"] == N_CLIPS * len(TOOLS) and s_ray["failed"] == 0, s_ray["failures"][:2]
    assert len(seen) == N_CLIPS and sorted(r["path"] for r in seen) == sorted(map(str, clips))
    got = _stored(ray_cache)
    assert set(got) == set(pool)                  # the same cache keys ...
    for k in pool:
        assert got[k] == pool[k], k               # ... and the same envelopes (results, audio fields)
    assert len({json.dumps(e["result"], sort_keys=True) for e in got.values()}) > N_CLIPS  # real, varied results
    assert read_keys(tmp_path / "out") == set(pool)  # the Parquet folder holds the same outputs

    # Every output landed: a re-run through the CLI computes nothing (the actors skip landed keys); a
    # file that is not audio fails on its own, with a one-line `<problem>; <fix>` and exit 2.
    folder = tmp_path / "again"
    folder.mkdir()
    for c in clips:
        os.link(c, folder / c.name)  # same bytes: same keys
    (folder / "broken.wav").write_bytes(b"not a wav file at all" * 10)
    res = CliRunner().invoke(app, ["cache", "warm", str(folder), "-t", ",".join(TOOLS), "--engine", "ray",
                                   "--parquet", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    again = json.loads(res.stdout)
    assert again["engine"] == "ray" and again["computed"] == 0 and again["cached"] == N_CLIPS * len(TOOLS), again
    assert again["failed"] == len(TOOLS) and {f["path"] for f in again["failures"]} == {str(folder / "broken.wav")}
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 42 tool outputs failed") and "; " in last


_DRIVER = """
import sys
from pathlib import Path
from toolcache.ray_warm import RayWarmOptions, warm_ray
clips = sorted(Path(sys.argv[2]).glob('*.wav'))
warm_ray(clips, sys.argv[3].split(','), RayWarmOptions(address=sys.argv[1], actors=2, batch_size=1, commit_every=1))
"""


def test_ray_warm_resumes_after_sigkill(ray_address, clips, tmp_path, monkeypatch):
    from toolcache.cache import Cache
    from toolcache.ray_warm import RayWarmOptions, warm_ray

    cache_dir = tmp_path / "killed"
    cache_dir.mkdir()
    env = dict(os.environ, AUDIOROUTER_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, ray_address, str(clips[0].parent), ",".join(TOOLS)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = N_CLIPS * len(TOOLS)
    landed = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if (cache_dir / "cache.sqlite").exists():
                landed = Cache(cache_dir / "cache.sqlite").stats()["entries"]
                if landed >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the driver ended before it could be killed: {proc.stderr.read()[-800:]!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    landed = Cache(cache_dir / "cache.sqlite").stats()["entries"]
    assert 0 < landed < total, landed

    _use_cache(monkeypatch, cache_dir)
    s = warm_ray(clips, TOOLS, RayWarmOptions(actors=2))
    assert s["cached"] == landed and s["computed"] == total - landed and s["failed"] == 0
    assert Cache(cache_dir / "cache.sqlite").stats()["entries"] == total


def test_options_are_validated_before_ray_starts(tmp_path):
    from toolcache.errors import UnknownToolError
    from toolcache.ray_warm import RayWarmOptions, warm_ray

    with pytest.raises(ValueError, match="nothing would be stored"):
        RayWarmOptions(local_cache=False)
    with pytest.raises(ValueError, match="actors"):
        RayWarmOptions(actors=0)
    with pytest.raises(ValueError, match="valid: per-tool, shared"):
        RayWarmOptions(pools="fused")
    with pytest.raises(UnknownToolError, match="available tools"):
        warm_ray([tmp_path / "x.wav"], ["no_such_tool"], RayWarmOptions())
    with pytest.raises(ValueError, match="valid parameters"):
        warm_ray([tmp_path / "x.wav"], ["chords"], RayWarmOptions(), params_by_tool={"chords": {"nope": 1}})
