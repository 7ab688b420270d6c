"""Benchmark: `cache warm` on the process pool vs on Ray (both 2 workers), one run, + a cluster projection.

    python bench/bench_ray.py                               # 100 x 2 s synthetic clips
    python bench/bench_ray.py --clips 200 --tools audio_features,sound_events --json
    python bench/bench_ray.py --nodes 1,4,16,64 --cores-per-node 8 --asr-s-per-clip 2.0

Every run is the real CLI (`python -m cli.main cache warm FOLDER --tools ... --workers 2 --json`)
in a fresh process against a fresh, empty cache folder, timed as a whole (process start, imports,
model loads, compute, cache writes):

    pool            --engine local (process pool, 2 workers)
    ray (private)   --engine ray: the command starts its own local Ray runtime (2 CPUs) and stops it
    ray (joined)    --engine ray --address HOST:PORT of a runtime already up (a cluster job's case)
    ray no-op       joined, re-run over the same clips: every output landed, nothing computed (the
                    fixed cost of a Ray job: dataset planning, actor start-up, the skip checks)

The joined runtime is started by this script (ray.init, 2 CPUs, 127.0.0.1) and shut down at the end.
Keys and envelopes of the Ray caches are checked equal to the pool's (elapsed_s/cached aside).
The driver's commit rate (outputs/s verified and stored into SQLite) is measured by importing 5000
distinct rows made from the Ray run's Parquet output (audio_sha256 replaced, key recomputed) into an
empty cache: it bounds what one driver can absorb from a cluster.

Projection (printed with its assumptions): T(N nodes, M clips) = F + M * c / (N * k), where F is the
measured no-op time, c the measured compute seconds per clip per core (joined run minus no-op, times
2 workers, over the clips), k cores per node (--cores-per-node); capped below by the driver's commit
rate. ASR is projected with --asr-s-per-clip seconds per clip per core (an input, not measured here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """n distinct 16 kHz clips: a tone whose pitch differs per clip, plus noise (no hits between clips)."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (110 + 13 * i) * t) + 0.05 * rng.standard_normal(t.size)
        p = folder / f"c{i:04d}.wav"
        sf.write(p, x.astype(np.float32), sr)
        out.append(p)
    return out


def run_cli(args: list[str], cache_dir: Path) -> tuple[float, dict]:
    env = dict(os.environ, AUDIOROUTER_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cli.main", "cache", "warm", *args, "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench_ray: `cache warm {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return wall, json.loads(proc.stdout)


def stored(cache_dir: Path) -> dict:
    from toolcache.cache import Cache

    c = Cache(cache_dir / "cache.sqlite")
    out = {}
    for k in c.keys("tool"):
        env = c.get_by_key(k)
        out[k] = {f: v for f, v in env.items() if f not in ("elapsed_s", "cached")}
    c.close()
    return out


def driver_commit_rate(work: Path, outputs: int, n: int = 5000) -> float:
    """Outputs/s one process verifies and stores into SQLite: `n` distinct rows made from the Ray run's
    real envelopes (audio_sha256 replaced, key recomputed), imported into an empty cache. The Ray
    driver does the same work per output (key check + one transaction per commit)."""
    import hashlib

    import pyarrow.parquet as pq

    from toolcache.transfer import (
        envelope_key,
        import_parquet,
        parquet_files,
        read_keys,
        row_for,
        write_rows,
    )

    real = [r for f in parquet_files(work / "parquet") for r in pq.read_table(str(f)).to_pylist()]
    assert len(real) == outputs and read_keys(work / "parquet") == {r["key"] for r in real}
    rows = []
    for i in range(max(n, outputs)):
        env = json.loads(real[i % len(real)]["envelope"])
        env["audio_sha256"] = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        rows.append(row_for(envelope_key(env), json.dumps(env, separators=(",", ":"))))
    write_rows(work / "synthetic.parquet", rows)
    os.environ["AUDIOROUTER_CACHE_DIR"] = str(work / "c-import")
    imp = import_parquet(work / "synthetic.parquet")
    assert imp["imported"] == len(rows)
    return imp["imported"] / max(imp["elapsed_s"], 1e-9)


def fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each synthetic clip (s)")
    ap.add_argument("--tools", default="audio_features,sound_duration")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nodes", default="1,4,16,64", help="node counts for the projection")
    ap.add_argument("--cores-per-node", type=int, default=8, help="projection assumption: actors per node")
    ap.add_argument("--asr-s-per-clip", type=float, default=2.0,
                    help="projection input: ASR seconds per clip per core (issue 14 quotes ~2 s on this VM)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        import ray
    except ImportError:
        sys.exit("bench_ray: ray is not installed; pip install -e '.[ray]'")
    tools = a.tools.split(",")
    w = str(a.workers)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    clips = make_clips(work / "clips", a.clips, a.seconds)
    folder = str(clips[0].parent)
    base = [folder, "--tools", ",".join(tools), "--workers", w]
    rows = []

    wall, s = run_cli(base, work / "c-pool")
    rows.append(("pool", wall, s))
    pool = stored(work / "c-pool")
    wall, s = run_cli(base + ["--engine", "ray"], work / "c-ray-private")
    rows.append(("ray (private runtime)", wall, s))

    ctx = ray.init(num_cpus=a.workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                   object_store_memory=256 * 1024 * 1024, log_to_driver=False, logging_level="ERROR")
    try:
        address = ctx.address_info["gcs_address"]
        joined = base + ["--engine", "ray", "--address", address]
        wall, s = run_cli(joined + ["--parquet", str(work / "parquet")], work / "c-ray-joined")
        rows.append(("ray (joined runtime)", wall, s))
        wall_noop, s = run_cli(joined, work / "c-ray-joined")
        rows.append(("ray no-op (all landed)", wall_noop, s))
    finally:
        ray.shutdown()
    same = all(stored(work / d) == pool for d in ("c-ray-private", "c-ray-joined"))

    commit_rate = driver_commit_rate(work, len(tools) * a.clips)

    t_pool = rows[0][1]
    outputs = a.clips * len(tools)
    table = []
    for name, wall, s in rows:
        table.append({"run": name, "wall_s": round(wall, 2), "clips_per_s": round(a.clips / wall, 2),
                      "vs_pool": round(wall / t_pool, 2), "computed": s["computed"], "cached": s["cached"],
                      "ray_start_s": s.get("ray_start_s")})
    t_joined = rows[2][1]
    fixed = wall_noop
    c_clip = max(t_joined - fixed, 1e-6) * a.workers / a.clips  # compute s per clip per core, these tools
    nodes = [int(n) for n in a.nodes.split(",")]
    proj = []
    for label, c in ((f"{'+'.join(tools)} (measured)", c_clip), (f"asr ({a.asr_s_per_clip:g} s/clip, assumed)",
                                                               a.asr_s_per_clip)):
        for m in (5_000, 1_000_000):
            for n in nodes:
                compute = m * c / (n * a.cores_per_node)
                floor = m * len(tools) / commit_rate if label.endswith("(measured)") else m / commit_rate
                proj.append({"tools": label, "clips": m, "nodes": n, "est_s": round(fixed + max(compute, floor), 1),
                             "driver_bound": floor > compute})
    doc = {"clips": a.clips, "seconds_per_clip": a.seconds, "tools": tools, "workers": a.workers,
           "outputs": outputs, "runs": table, "same_keys_and_envelopes": same,
           "ray_overhead_ratio_private": round(rows[1][1] / t_pool, 2),
           "ray_overhead_ratio_joined": round(t_joined / t_pool, 2),
           "ray_fixed_s": round(fixed, 2), "compute_s_per_clip_per_core": round(c_clip, 4),
           "driver_commit_outputs_per_s": round(commit_rate, 0), "cores_per_node": a.cores_per_node,
           "projection": proj}
    if a.json:
        print(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=140)
    t = Table(title=f"cache warm: {a.clips} clips x {a.seconds:g} s, tools {', '.join(tools)}, {a.workers} workers "
                    f"(whole CLI command, fresh cache)", title_justify="left")
    for col in ("run", "wall s", "clips/s", "time vs pool", "computed", "cached", "ray start s"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in table:
        t.add_row(r["run"], f"{r['wall_s']:.1f}", f"{r['clips_per_s']:.1f}", f"{r['vs_pool']:.2f}x", str(r["computed"]),
                  str(r["cached"]), "" if r["ray_start_s"] is None else f"{r['ray_start_s']:.1f}")
    con.print(t)
    con.print(f"same keys and envelopes as the pool: {'yes' if same else 'NO'}; Ray overhead ratio (time / pool time): "
              f"{doc['ray_overhead_ratio_private']:.2f}x with its own runtime, {doc['ray_overhead_ratio_joined']:.2f}x "
              f"joining a running one; fixed cost of a Ray job {fixed:.1f} s; compute {c_clip:.3f} s per clip per "
              f"core; one driver commits {commit_rate:.0f} outputs/s")
    p = Table(title=f"projection: T = {fixed:.0f} s + clips x c / (nodes x {a.cores_per_node} cores), floored by the "
                    f"driver's commit rate", title_justify="left")
    for col in ("tools", "clips", *[f"{n} node{'s' if n > 1 else ''}" for n in nodes]):
        p.add_column(col, justify="left" if col == "tools" else "right")
    for label in dict.fromkeys(r["tools"] for r in proj):
        for m in (5_000, 1_000_000):
            cells = [fmt_s(r["est_s"]) + ("*" if r["driver_bound"] else "") for r in proj
                     if r["tools"] == label and r["clips"] == m]
            p.add_row(label, f"{m:,}", *cells)
    p.caption = ("assumes: clips independent, files readable at the same path on every node, linear scaling over "
                 "actors, no stragglers, fixed cost paid once; * = the single driver's SQLite commits are the limit "
                 "(write --parquet only, --no-local-cache, and import per gateway)")
    con.print(p)


if __name__ == "__main__":
    main()
