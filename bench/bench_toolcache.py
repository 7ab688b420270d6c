"""Benchmark: cold tool compute vs cache hit, per registered tool, on examples/audio/*.wav.

    python bench/bench_toolcache.py            # rich table
    python bench/bench_toolcache.py --json     # one JSON document

All figures come from ONE run on this machine:
- load_s: the tool's first call in this process (imports + model load), excluded from compute_ms.
- compute_ms: median wall time of `toolcache.run(tool, clip, cache=False)` (decode + compute + store).
- hit_ms / hit_p95_ms: wall time of `toolcache.run(tool, clip)` served from the cache
  (hash memo lookup + indexed SELECT + JSON parse), median and 95th percentile of --hits calls.
- speedup: compute_ms / hit_ms.
- 2-process throughput: two fresh processes hit the same cache file at once for --seconds.
Also reported: a hit with the file re-hashed (no memo) and a hit that rewrites last_used every time,
to show what the memo and the coarse LRU touch save.
Uses a temporary cache folder unless --cache-dir is given (your real cache is untouched).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_HIT_MS = 2.0
TARGET_SPEEDUP = 500.0

_HIT_WORKER = r"""
import json, sys, time
import toolcache
pairs = json.loads(sys.argv[1]); start = float(sys.argv[2]); seconds = float(sys.argv[3])
for tool, clip in pairs:                      # warm this process: imports, connection, backend ids
    assert toolcache.run(tool, clip)["cached"]
while time.time() < start:
    time.sleep(0.001)
n, lat, end = 0, [], start + seconds
cpu0 = time.process_time()
while time.time() < end:
    tool, clip = pairs[n % len(pairs)]
    t = time.perf_counter(); out = toolcache.run(tool, clip); lat.append(time.perf_counter() - t)
    assert out["cached"]
    n += 1
cpu = time.process_time() - cpu0
lat.sort()
print(json.dumps({"hits": n, "median_ms": 1000 * lat[len(lat) // 2], "p95_ms": 1000 * lat[int(0.95 * len(lat))],
                  "cpu_s": cpu, "hits_per_cpu_s": n / cpu if cpu else None}))
"""


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def _p95_ms(times: list[float]) -> float:
    s = sorted(times)
    return 1000.0 * s[min(len(s) - 1, int(0.95 * len(s)))]


def _forget_inprocess_memos() -> None:
    from toolcache.tools import sound

    sound.clear_memo()


def bench_tool(tool: str, clips: list[Path], hits: int, repeats: int) -> dict:
    import toolcache

    t = time.perf_counter()
    toolcache.run(tool, str(clips[0]), cache=False)  # imports + model load, not counted as compute
    load_s = time.perf_counter() - t
    compute, hit = [], []
    for clip in clips:
        for _ in range(repeats):
            _forget_inprocess_memos()  # a cold compute: no YAMNet scores memoised by a sibling tool
            t = time.perf_counter()
            out = toolcache.run(tool, str(clip), cache=False)
            compute.append(time.perf_counter() - t)
            assert out["cached"] is False
        for _ in range(hits):
            t = time.perf_counter()
            out = toolcache.run(tool, str(clip))
            hit.append(time.perf_counter() - t)
            assert out["cached"] is True
    return {"tool": tool, "load_s": round(load_s, 3), "compute_ms": round(_median_ms(compute), 3),
            "hit_ms": round(_median_ms(hit), 4), "hit_p95_ms": round(_p95_ms(hit), 4),
            "speedup": round(_median_ms(compute) / _median_ms(hit), 1),
            "n_compute": len(compute), "n_hits": len(hit)}


def bench_variants(tool: str, clips: list[Path], hits: int) -> dict:
    """Hit cost without the hash memo, and with a last_used write on every hit."""
    import toolcache
    from toolcache import cache as cache_mod

    store = toolcache.open_cache()
    no_memo, touch = [], []
    for clip in clips:
        for _ in range(hits):
            store.conn.execute("DELETE FROM file_hashes")  # force a re-hash of the bytes
            store._memo.clear()
            t = time.perf_counter()
            toolcache.run(tool, str(clip))
            no_memo.append(time.perf_counter() - t)
    for clip in clips:
        toolcache.run(tool, str(clip))  # re-memoise
    saved = cache_mod.TOUCH_RESOLUTION_S
    cache_mod.TOUCH_RESOLUTION_S = -1.0  # every hit rewrites last_used (one small write transaction)
    try:
        for clip in clips:
            for _ in range(hits):
                t = time.perf_counter()
                toolcache.run(tool, str(clip))
                touch.append(time.perf_counter() - t)
    finally:
        cache_mod.TOUCH_RESOLUTION_S = saved
    return {"tool": tool, "hit_no_memo_ms": round(_median_ms(no_memo), 4),
            "hit_touch_every_hit_ms": round(_median_ms(touch), 4)}


def bench_two_processes(pairs: list[tuple[str, str]], seconds: float) -> dict:
    start = time.time() + 8.0  # both processes finish importing before the clock starts
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", _HIT_WORKER, json.dumps(pairs), str(start), str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120 + seconds)
        if p.returncode != 0:
            raise RuntimeError(f"hit worker failed: {err[-1000:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(o["hits"] for o in outs)
    cpu = sum(o["cpu_s"] for o in outs)
    return {"processes": 2, "seconds": seconds, "hits": total, "hits_per_s": round(total / seconds, 1),
            "cpu_s": round(cpu, 3), "hits_per_cpu_s": round(total / cpu, 1) if cpu else None, "per_process": outs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", default=None, help="comma-separated tools (default: every registered tool)")
    ap.add_argument("--clips", default=str(REPO / "examples" / "audio"), help="folder of *.wav clips")
    ap.add_argument("--hits", type=int, default=200, help="cache hits timed per (tool, clip)")
    ap.add_argument("--repeats", type=int, default=2, help="cold computes timed per (tool, clip)")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of the 2-process hit test")
    ap.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--json-out", default=None, help="also write the JSON document to this file (same run as the table)")
    args = ap.parse_args(argv)

    tmp = None
    if args.cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_toolcache_")
        args.cache_dir = tmp.name
    os.environ["AUDIOROUTER_CACHE_DIR"] = str(args.cache_dir)

    import toolcache

    tools = [t.strip() for t in args.tools.split(",")] if args.tools else toolcache.available_tools()
    clips = sorted(Path(args.clips).glob("*.wav"))
    if not clips:
        print(f"error: no *.wav clips in {args.clips}; pass --clips FOLDER", file=sys.stderr)
        return 2
    rows = []
    for tool in tools:
        print(f"benchmarking {tool} on {len(clips)} clips ...", file=sys.stderr, flush=True)
        rows.append(bench_tool(tool, clips, args.hits, args.repeats))
    cheapest = min(rows, key=lambda r: r["compute_ms"])
    variants = bench_variants(cheapest["tool"], clips, max(20, args.hits // 4))
    pairs = [(r["tool"], str(c)) for r in rows for c in clips]
    print(f"2-process hit throughput for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
    two = bench_two_processes(pairs, args.seconds)
    worst_hit = max(r["hit_ms"] for r in rows)
    doc = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "clips": [c.name for c in clips],
        "tools": rows,
        "cheapest_tool": cheapest["tool"],
        "variants": variants,
        "two_process": two,
        "targets": {
            "hit_ms_max": TARGET_HIT_MS, "speedup_min_vs_cheapest": TARGET_SPEEDUP,
            "worst_median_hit_ms": worst_hit,
            "speedup_vs_cheapest": round(cheapest["compute_ms"] / worst_hit, 1),
            "met": bool(worst_hit < TARGET_HIT_MS and cheapest["compute_ms"] / worst_hit >= TARGET_SPEEDUP),
        },
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_table(doc)
    if tmp is not None:
        tmp.cleanup()
    return 0


def _print_table(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    t = Table(title=f"toolcache: cold compute vs cache hit ({len(doc['clips'])} clips: {', '.join(doc['clips'])}; "
                    f"{doc['machine']['cpus']} CPUs, load {doc['machine']['load_avg_1m']})", title_justify="left")
    for col in ("tool", "first call (load) s", "compute ms (median)", "hit ms (median)", "hit ms (p95)", "speedup"):
        t.add_column(col, justify="right" if col != "tool" else "left")
    for r in doc["tools"]:
        t.add_row(r["tool"], f"{r['load_s']:.2f}", f"{r['compute_ms']:.1f}", f"{r['hit_ms']:.3f}",
                  f"{r['hit_p95_ms']:.3f}", f"{r['speedup']:,.0f}x")
    con.print(t)
    v, two, tg = doc["variants"], doc["two_process"], doc["targets"]
    t2 = Table(title="hit variants and concurrency", title_justify="left")
    t2.add_column("measure")
    t2.add_column("value", justify="right")
    t2.add_row(f"hit, file re-hashed (no memo), {v['tool']}", f"{v['hit_no_memo_ms']:.3f} ms")
    t2.add_row(f"hit, last_used rewritten on every hit, {v['tool']}", f"{v['hit_touch_every_hit_ms']:.3f} ms")
    t2.add_row(f"2 processes hitting one cache file for {two['seconds']:.0f} s", f"{two['hits_per_s']:,.0f} hits/s")
    t2.add_row("  same, per CPU-second used (the cores are shared)", f"{two['hits_per_cpu_s']:,.0f} hits/s")
    for i, p in enumerate(two["per_process"]):
        t2.add_row(f"  process {i}: median / p95 hit", f"{p['median_ms']:.3f} / {p['p95_ms']:.3f} ms")
    con.print(t2)
    verdict = "MET" if tg["met"] else "NOT MET"
    con.print(f"target (hit < {tg['hit_ms_max']} ms and >= {tg['speedup_min_vs_cheapest']:.0f}x the cheapest tool's "
              f"compute): {verdict} — worst median hit {tg['worst_median_hit_ms']:.3f} ms, "
              f"{tg['speedup_vs_cheapest']:,.0f}x vs {doc['cheapest_tool']}")


if __name__ == "__main__":
    raise SystemExit(main())
