"""Scaling bench: how costs grow with the work (issue 16). One run prints every section's table.

    python bench/bench_scaling.py                       # all sections, default sizes
    python bench/bench_scaling.py --sections cache --cache-sizes 1000,10000,100000

Sections live in SECTIONS (name -> function(args) printing its own table): cache (below), loops
(batch/collect memory at 50 -> 1000 questions, bench/bench_loops.py) and tokens (routing 28 -> 2000
question tokens, bench/bench_router_long_inputs.py).

cache: at each size N (entries of ~3.2 kB JSON, like a typical tool envelope), in one run:
  - put p50 below the limit vs at the limit (ratio; target <= 2x),
  - eviction of half the cache while a second *process* keeps writing: eviction time, that
    writer's max put latency (target: never blocked > 100 ms) and failed writes (target 0),
  - file size / limit after `compact()` (target <= 1.3x),
  - `stats()` time on a fresh Cache object (target < 0.2 s at 100k), next to the full-scan
    GROUP BY query that `cache stats` used to run, on the same file.
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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VALUE_BYTES = 3200  # typical stored envelope (issue 16: 3.2 kB of counted value per entry)

_WRITER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
from toolcache.cache import Cache
path, max_bytes, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = Cache(path, max_bytes=max_bytes)
pad = "w" * 3000
import sqlite3
probe = sqlite3.connect(path, timeout=30, isolation_level=None)  # measures lock waits alone
lat, waits, failed, i = [], [], 0, 0
c.put_json("tool", {"tool": "writer", "i": -1}, {"pad": pad})     # open + schema check before "ready"
print("ready", flush=True)
deadline = time.monotonic() + 600
while not os.path.exists(stop) and time.monotonic() < deadline:
    t = time.perf_counter()
    probe.execute("BEGIN IMMEDIATE")   # how long another writer must wait for the write lock
    probe.execute("ROLLBACK")
    waits.append(time.perf_counter() - t)
    t = time.perf_counter()
    try:
        c.put_json("tool", {"tool": "writer", "i": i}, {"i": i, "pad": pad})
    except Exception as exc:
        failed += 1
    lat.append(time.perf_counter() - t)
    i += 1
    time.sleep(0.002)   # a tool finishing every few ms: a busy warm
lat.sort(); waits.sort()
print(json.dumps({"writes": len(lat), "failed": failed, "max_ms": 1000 * lat[-1], "wait_max_ms": 1000 * waits[-1],
                  "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))]}), flush=True)
"""


def _value(i: int) -> dict:
    """A ~VALUE_BYTES JSON object shaped like a tool envelope (numbers and labels)."""
    events = [{"label": f"class_{(i * 7 + k) % 521}", "score": round(((i * 31 + k * 17) % 1000) / 1000, 4),
               "start_s": k * 0.96, "end_s": k * 0.96 + 0.96} for k in range(40)]
    doc = {"tool": "bench", "tool_version": "1", "i": i, "result": {"events": events}}
    text = json.dumps(doc, separators=(",", ":"))
    doc["pad"] = "p" * max(0, VALUE_BYTES - len(text) - 10)
    return doc


def _p50_put(cache, start: int, n: int) -> float:
    times = []
    for i in range(start, start + n):
        v = _value(i)
        t = time.perf_counter()
        cache.put_json("tool", {"tool": "bench", "i": i}, v)
        times.append(time.perf_counter() - t)
    return statistics.median(times), max(times)


def bench_cache(args) -> list[dict]:
    from toolcache.cache import Cache

    rows = []
    for n in args.cache_sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
            path = Path(tmp) / "cache.sqlite"
            big = Cache(path, max_bytes=10**15)
            t = time.perf_counter()
            for s in range(0, n, 1000):  # bulk fill: 1000 entries per transaction
                big.put_many_json("tool", [({"tool": "bench", "i": i}, _value(i)) for i in range(s, min(n, s + 1000))])
            fill_s = time.perf_counter() - t
            p50_below, max_below = _p50_put(big, n, args.puts)
            limit = big.total_size()
            at = Cache(path, max_bytes=limit)
            p50_at, max_at = _p50_put(at, n + args.puts, args.puts)

            fresh = Cache(path, max_bytes=limit)
            st_times = []
            for _ in range(5):
                fresh = Cache(path, max_bytes=limit)
                t = time.perf_counter()
                s = fresh.stats()
                st_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            fresh.conn.execute("SELECT namespace, tool, COUNT(*), SUM(size) FROM entries GROUP BY namespace, tool").fetchall()
            scan_s = time.perf_counter() - t
            entries_before = s["entries"]

            half = limit // 2
            stop = Path(tmp) / "stop"
            w = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(half), str(stop), str(REPO)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert w.stdout.readline().strip() == "ready", w.stderr.read()
            time.sleep(0.05)
            ev_cache = Cache(path, max_bytes=half)
            ev = ev_cache.evict()
            time.sleep(0.1)
            stop.touch()
            out, err = w.communicate(timeout=120)
            writer = json.loads(out.strip().splitlines()[-1]) if w.returncode == 0 else {"failed": "crashed: " + err[-300:]}
            comp = ev_cache.compact()
            after = ev_cache.stats()
            rows.append({
                "entries": n, "fill_s": fill_s, "p50_below_ms": 1000 * p50_below, "p50_at_ms": 1000 * p50_at,
                "put_ratio": p50_at / p50_below,
                "max_below_ms": 1000 * max_below, "max_at_ms": 1000 * max_at, "evicted": ev["removed"], "evict_s": ev["elapsed_s"],
                "writer_writes": writer.get("writes"), "writer_max_ms": writer.get("max_ms"),
                "writer_wait_ms": writer.get("wait_max_ms"),
                "writer_p99_ms": writer.get("p99_ms"), "writer_failed": writer.get("failed"),
                "file_over_limit": comp["file_bytes_after"] / half, "file_mb": comp["file_bytes_after"] / 1e6,
                "limit_mb": half / 1e6, "stats_s": statistics.median(st_times), "scan_s": scan_s,
                "entries_before": entries_before, "entries_after": after["entries"],
            })
            print(f"  cache {n}: done", file=sys.stderr, flush=True)
    _print_cache(rows)
    return rows


def _print_cache(rows: list[dict]) -> None:
    print("\ncache at its size limit (entries of ~3.2 kB; eviction of half with a 2nd writer process)")
    head = ("entries", "put p50 below ms", "put p50 at limit ms", "ratio", "put max below / at ms", "evict half s", "evicted",
            "2nd writer max lock wait ms", "2nd writer put max ms", "put p99 ms", "writes (failed)", "file/limit after compact",
            "stats s", "old scan s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['entries']} | {r['p50_below_ms']:.3f} | {r['p50_at_ms']:.3f} | {r['put_ratio']:.2f}x "
              f"| {r['max_below_ms']:.1f} / {r['max_at_ms']:.1f} "
              f"| {r['evict_s']:.2f} | {r['evicted']} | {r['writer_wait_ms']:.1f} | {r['writer_max_ms']:.1f} | {r['writer_p99_ms']:.1f} "
              f"| {r['writer_writes']} ({r['writer_failed']}) | {r['file_over_limit']:.2f}x "
              f"({r['file_mb']:.1f} / {r['limit_mb']:.1f} MB) | {r['stats_s']:.4f} | {r['scan_s']:.3f} |")


def bench_loops(args) -> list[dict]:
    """batch / collect memory from 50 to 1000 questions (bench/bench_loops.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_loops

    return bench_loops.run(args)


def bench_tokens(args) -> list[dict]:
    """route() time and choice sensitivity from 28 to 2000 question tokens (bench/bench_router_long_inputs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_router_long_inputs

    return bench_router_long_inputs.tokens_section(args)


SECTIONS = {"cache": bench_cache, "loops": bench_loops, "tokens": bench_tokens}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated; available: {', '.join(SECTIONS)}")
    ap.add_argument("--cache-sizes", default="1000,10000,100000", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--puts", type=int, default=300, help="timed puts per measurement")
    ap.add_argument("--sizes", default="50,200,1000", help="loops: dataset sizes (questions)")
    ap.add_argument("--loops", default="batch,collect", help="loops: which loops")
    ap.add_argument("--tokens", default="28,120,500,2000", help="tokens: question lengths")
    ap.add_argument("--repeats", type=int, default=300, help="tokens: calls per length (default router: /10)")
    args, _ = ap.parse_known_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; available: {', '.join(SECTIONS)}")
    t0 = time.time()
    print(f"bench_scaling: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%d %b %Y %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}", flush=True)
    for name in names:
        SECTIONS[name](args)
    print(f"\n{time.time() - t0:.0f} s in all; load average at the end {os.getloadavg()[0]:.2f} "
          f"(max latencies grow with other load on the machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
