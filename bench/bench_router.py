#!/usr/bin/env python
"""Router speed, measured in one run: int8 ONNX vs fp32 ONNX vs torch eager, batched throughput,
and a cold `import textrouter; load_router().route(...)`.

    python bench/bench_router.py            # table with ratios
    python bench/bench_router.py --json     # one JSON document

Models: the single-question rows run the SAME network (MiniLM-L6 + head, weights from
`build_policy`; speed does not depend on the weight values): torch eager, its fp32 ONNX export and
its int8 quantisation by textrouter.export ("dynamic", the first method of the auto ladder), both
with the default graph fusion (onnxruntime transformer optimizer) and without it
(ExportOptions(optimize=False)), exported once into --workdir and reused. The bundled default
router (int8, whichever method its export chose) is timed as well (plus --old-router, e.g. a copy
of the previous default router, for a before/after in the same run), then batched throughput and
the cold start.

Single question: p50 over --repeats calls of `Router.route` (tokenise + ONNX + softmax) on
1 intra-op thread, cycling through the 499 dev questions (MMAU-mini, real question lengths);
torch eager does the same work (tokenise, forward, softmax; 1 thread, inference_mode). The engines
run in turn on each question, so load from other processes hits them alike.
Batched: `route_batch` over the 499 questions, best of 3 passes: one process with 2 intra-op
threads (batch --batch and 64), and 2 processes x 1 thread each routing half of the questions
(started together at a barrier; q/s = all questions / the slower process's wall time).
Cold: wall time of a fresh python process importing textrouter, loading the default router and
routing one question (median of 3), next to a bare `python -c pass`.

Targets (issue): int8 p50 <= 3 ms; torch eager >= 3x slower than int8; batched >= 1000 q/s;
cold < 1 s. The machine is shared: the load average at start and end is printed with the results.
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
sys.path.insert(0, str(REPO))

TARGETS = {"int8_p50_ms": 3.0, "torch_over_int8": 3.0, "batched_qps": 1000.0, "cold_s": 1.0}


def _dev_items():
    from textrouter.export import DEV_TABLE

    rows = [json.loads(line) for line in DEV_TABLE.read_text().splitlines() if line.strip()]
    return [{"question": r["question"], "choices": r["choices"]} for r in rows]


def _interleaved_p50(engines: dict, items, repeats: int) -> dict:
    """p50 ms per engine; engines run in turn on each question, so a load spike from other
    processes on this shared machine hits all of them alike (fair ratios)."""
    for fn in engines.values():  # warm-up: allocate buffers, first-call graph work
        for it in items[:10]:
            fn(it)
    times: dict = {name: [] for name in engines}
    for k in range(repeats):
        it = items[k % len(items)]
        for name, fn in engines.items():
            t0 = time.perf_counter()
            fn(it)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def _torch_route(policy, tokenizer):
    """Same work as Router.route, in torch eager: tokenise, forward, softmax (1 thread)."""
    import torch

    from textrouter.text import format_input

    torch.set_num_threads(1)
    policy.eval()

    def route(it):
        with torch.inference_mode():
            enc = tokenizer.encode(format_input(it["question"], it["choices"]))
            logits = policy(torch.tensor([enc.ids]), torch.tensor([enc.attention_mask]))
            return logits.softmax(-1).numpy()

    return route


def _throughput(router, items, batch: int) -> float:
    router.route_batch(items[:batch], batch_size=batch)  # warm-up
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        router.route_batch(items, batch_size=batch)
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best


def _two_process_worker(folder: str, items, batch: int, passes: int, barrier, queue) -> None:
    """One of the 2 single-threaded router processes of the '2 cores' throughput figure."""
    sys.path.insert(0, str(REPO))
    from textrouter.runtime import load_router

    router = load_router(folder, "int8", threads=1)
    router.route_batch(items[:batch], batch_size=batch)  # warm-up
    for _ in range(passes):
        barrier.wait()  # both processes start each pass together
        t0 = time.perf_counter()
        router.route_batch(items, batch_size=batch)
        queue.put(time.perf_counter() - t0)


def _two_process_throughput(folder: Path, items, batch: int, passes: int = 3) -> float:
    """q/s of 2 processes x 1 intra-op thread, each routing half of the questions."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    halves = [items[0::2], items[1::2]]
    procs = [ctx.Process(target=_two_process_worker, args=(str(folder), h, batch, passes, barrier, queue))
             for h in halves]
    for p in procs:
        p.start()
    try:
        walls = [max(queue.get(timeout=600) for _ in procs) for _ in range(passes)]
    finally:
        for p in procs:
            p.join(timeout=60)
    return len(items) / min(walls)


def _cold(n: int = 3) -> tuple[float, float]:
    code = ("import textrouter; r = textrouter.load_router(); "
            "r.route('What is the man saying?', ['hello', 'goodbye'])")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def wall(args):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, env=env, cwd=str(REPO),
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    wall(["-c", code])  # warm the OS file cache once (the first ever run reads ~23 MB from disk)
    return (statistics.median(wall(["-c", code]) for _ in range(n)),
            statistics.median(wall(["-c", "pass"]) for _ in range(n)))


def _export_same_model(workdir: Path):
    """(policy, {"fused": folder, "plain": folder}): model.onnx + model.int8.onnx of one policy,
    with and without graph fusion, exported once."""
    from textrouter.export import ExportOptions, export_policy
    from textrouter.model import build_policy, tokenizer_path

    policy = build_policy(["direct", "asr"], None, seed=0).eval()
    folders = {}
    for kind, optimize in (("fused", True), ("plain", False)):
        folder = workdir / f"bench-router-{kind}"
        if not (folder / "router.json").is_file():
            print(f"exporting the bench model to {folder} (once)", file=sys.stderr)
            export_policy(policy, {"actions": ["direct", "asr"], "max_length": 128}, tokenizer_path(), folder,
                          ExportOptions(min_int8_agreement=0.0, optimize=optimize))  # untrained head
        folders[kind] = folder
    return policy, folders


def run(args) -> dict:
    from textrouter.runtime import load_router

    load_start = os.getloadavg()[0]
    items = _dev_items()
    policy, folders = _export_same_model(Path(args.workdir))
    folder = folders["fused"]
    res: dict = {"questions": len(items), "repeats": args.repeats, "batch": args.batch,
                 "cpu_count": os.cpu_count()}
    int8 = load_router(folder, "int8", threads=1)  # "dynamic" (first of the auto ladder)
    plain = load_router(folders["plain"], "int8", threads=1)
    fp32 = load_router(folder, "fp32", threads=1)
    default = load_router(threads=1)
    res["int8_method"] = int8.meta["metrics"]["quantization"]["method"]
    res["default_int8_method"] = _method(default.meta)
    engines = {
        "int8": lambda it: int8.route(it["question"], it["choices"]),
        "int8_plain": lambda it: plain.route(it["question"], it["choices"]),
        "fp32": lambda it: fp32.route(it["question"], it["choices"]),
        "torch": _torch_route(policy, int8._tokenizer),
        "default": lambda it: default.route(it["question"], it["choices"]),
    }
    if args.old_router:
        old = load_router(args.old_router, threads=1)
        res["old_router_method"] = _method(old.meta)
        engines["old"] = lambda it: old.route(it["question"], it["choices"])
    p50 = _interleaved_p50(engines, items, args.repeats)
    res["int8_p50_ms"], res["fp32_p50_ms"] = p50["int8"], p50["fp32"]
    res["int8_plain_p50_ms"] = p50["int8_plain"]
    res["torch_p50_ms"], res["default_int8_p50_ms"] = p50["torch"], p50["default"]
    if args.old_router:
        res["old_router_p50_ms"] = p50["old"]
    res["batched_qps_int8"] = _throughput(load_router(folder, "int8", threads=2), items, args.batch)
    res["batched_qps_int8_batch64"] = _throughput(load_router(folder, "int8", threads=2), items, 64)
    res["batched_qps_int8_2proc"] = _two_process_throughput(folder, items, args.batch)
    res["batched_qps_fp32"] = _throughput(load_router(folder, "fp32", threads=2), items, args.batch)
    res["cold_s"], res["python_startup_s"] = _cold()
    res["torch_over_int8"] = res["torch_p50_ms"] / res["int8_p50_ms"]
    res["fp32_over_int8"] = res["fp32_p50_ms"] / res["int8_p50_ms"]
    res["loadavg_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    res["targets_met"] = {
        "int8_p50_ms": res["int8_p50_ms"] <= TARGETS["int8_p50_ms"],
        "torch_over_int8": res["torch_over_int8"] >= TARGETS["torch_over_int8"],
        "batched_qps": max(res["batched_qps_int8"], res["batched_qps_int8_2proc"]) >= TARGETS["batched_qps"],
        "cold_s": res["cold_s"] < TARGETS["cold_s"],
    }
    return res


def _method(meta: dict) -> str:
    m = meta["metrics"]
    fused = "fused" if (m.get("graph_optimization") or {}).get("applied") else "unfused"
    return f"{m['quantization']['method']}, {fused}"


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"router speed ({res['questions']} MMAU-mini dev questions; load avg "
                    f"{res['loadavg_start_end'][0]} -> {res['loadavg_start_end'][1]} on {res['cpu_count']} cores)")
    for col in ("measurement", "value", "vs int8 ONNX", "target", "met"):
        t.add_column(col, justify="left" if col == "measurement" else "right")
    ok = res["targets_met"]
    mark = lambda b: "yes" if b else "NO"  # noqa: E731
    i8 = res["int8_p50_ms"]
    t.add_row(f"int8 ONNX ({res['int8_method']}, fused), 1 question, 1 thread, p50", f"{i8:.2f} ms", "1.00x",
              "<= 3 ms", mark(ok["int8_p50_ms"]))
    t.add_row(f"int8 ONNX ({res['int8_method']}, no graph fusion), p50", f"{res['int8_plain_p50_ms']:.2f} ms",
              f"{res['int8_plain_p50_ms'] / i8:.2f}x", "", "")
    t.add_row("fp32 ONNX, 1 question, 1 thread, p50", f"{res['fp32_p50_ms']:.2f} ms",
              f"{res['fp32_over_int8']:.2f}x slower", "", "")
    t.add_row("torch eager, 1 question, 1 thread, p50", f"{res['torch_p50_ms']:.2f} ms",
              f"{res['torch_over_int8']:.2f}x slower", ">= 3x slower", mark(ok["torch_over_int8"]))
    t.add_row(f"bundled default router (int8, {res['default_int8_method']}), p50", f"{res['default_int8_p50_ms']:.2f} ms",
              f"{res['default_int8_p50_ms'] / i8:.2f}x", "", "")
    if "old_router_p50_ms" in res:
        t.add_row(f"--old-router (int8, {res['old_router_method']}), p50", f"{res['old_router_p50_ms']:.2f} ms",
                  f"{res['old_router_p50_ms'] / i8:.2f}x", "", "")
    t.add_row(f"int8 batched (batch {res['batch']}, 2 threads)", f"{res['batched_qps_int8']:.0f} q/s", "",
              ">= 1000 q/s", mark(ok["batched_qps"]))
    t.add_row("int8 batched (batch 64, 2 threads)", f"{res['batched_qps_int8_batch64']:.0f} q/s", "", "", "")
    t.add_row(f"int8 batched, 2 processes x 1 thread (batch {res['batch']})",
              f"{res['batched_qps_int8_2proc']:.0f} q/s", "", ">= 1000 q/s", mark(ok["batched_qps"]))
    t.add_row(f"fp32 batched (batch {res['batch']}, 2 threads)", f"{res['batched_qps_fp32']:.0f} q/s",
              f"{res['batched_qps_int8'] / res['batched_qps_fp32']:.2f}x fewer", "", "")
    t.add_row("cold: python -c 'import textrouter; load_router().route(...)'", f"{res['cold_s']:.2f} s", "",
              "< 1 s", mark(ok["cold_s"]))
    t.add_row("  (bare python -c pass, for reference)", f"{res['python_startup_s']:.2f} s", "", "", "")
    Console(width=140).print(t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Router speed benchmark (one run, ratios).")
    ap.add_argument("--repeats", type=int, default=300, help="single-question calls per engine")
    ap.add_argument("--batch", type=int, default=8, help="route_batch size (8 = the runtime default)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "audiorouter-bench"),
                    help="where the bench model is exported once and reused")
    ap.add_argument("--old-router", default=None,
                    help="another router folder to time next to the bundled one (e.g. a copy of the previous default)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
