#!/usr/bin/env python
"""Router speed of both engines, measured in one run: int8 ONNX vs fp32 ONNX vs torch eager, the
bundled routers, batched throughput and a cold `import textrouter; load_router(NAME).route(...)`.

    python bench/bench_router.py            # table with ratios, one column per engine
    python bench/bench_router.py --json     # one JSON document

Engines (textrouter.encoders): `minilm` (MiniLM-L6 + mean pooling + linear head; bundled as the
`default` router) and `minilm-static` (a token table distilled from MiniLM + content-token mean +
linear head, the head folded into the table in ONNX; bundled as the `fast` router).

Models: per engine, the single-question rows run the SAME network (speed does not depend on the
weight values): torch eager, its fp32 ONNX export and its int8 quantisation by textrouter.export
("dynamic", the first method of the auto ladder), exported once into --workdir and reused.
  minilm: `build_policy` (MiniLM-L6 weights, untrained head), exported with the default graph
    fusion (onnxruntime transformer optimizer) and without it (ExportOptions(optimize=False)).
  minilm-static: `build_static_policy` over a seeded random [vocab, 384] table with a random head,
    so no distillation runs (the real table, textrouter.static.static_table(), takes ~40 s to
    distil once); torch eager is the unfolded StaticPolicy (Embedding -> content-token mean ->
    Linear), the ONNX files hold its folded form (`onnx_module()`), the same function.
The bundled router of each engine (int8, whichever method its export chose) is timed as well
(plus --old-router, e.g. a copy of a previous router, in the column of its engine).

Single question: p50 of `Router.route` (tokenise + ONNX + softmax) on 1 intra-op thread, cycling
through the 499 dev questions (MMAU-mini, real question lengths): --repeats calls per minilm
engine (default 300), --fast-repeats per minilm-static engine (default 3000); torch eager does the
same work (tokenise, forward, softmax; 1 thread, inference_mode). All engines run in one loop, in
a shuffled order on each step (the minilm ones on every n-th step), so load from other processes
and the cache flushing of the big engines hit them alike.
Batched: `route_batch` at the engine's default batch size (runtime.BATCH_SIZES: minilm 8,
minilm-static 64), best of >= 3 passes (and >= 3 s of passes) over the 499 questions (repeated
until a pass takes >= 0.5 s: the static engine routes them in ~50 ms): one process with 2
intra-op threads (int8 and fp32), and 2 processes x 1 thread each routing half of the questions
(started together at a barrier; q/s = all questions / the slower process's wall time).
Cold: wall time of a fresh python process importing textrouter, loading the bundled router of the
engine (`default` / `fast`) and routing one question (median of 3, after one run that warms the
OS file cache), next to a bare `python -c pass`.

Targets (issue), per engine: int8 p50 <= 3 ms; torch eager >= 3x slower than int8; batched
>= 1000 q/s (the better of the two batched figures); cold < 1 s. The machine is shared: the load
average at start and end is printed with the results.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {"int8_p50_ms": 3.0, "torch_over_int8": 3.0, "batched_qps": 1000.0, "cold_s": 1.0}
ACTIONS = ("direct", "asr")
MIN_PASS_SECONDS = 0.5  # batched: questions repeated until one pass takes at least this long
BATCH_SECONDS = 3.0  # batched: passes (>= 3) until this much time is timed; the best pass counts


def _dev_items():
    from textrouter.export import DEV_TABLE

    rows = [json.loads(line) for line in DEV_TABLE.read_text().splitlines() if line.strip()]
    return [{"question": r["question"], "choices": r["choices"]} for r in rows]


def _interleaved_p50(engines: dict, items) -> dict:
    """p50 ms per engine; engines = {name: (fn, calls)}. All run in one loop, in turn on each step
    (one with fewer calls only on every n-th step; shuffled order per step, so no engine always
    runs right after the same, cache-flushing one), so a load spike from other processes on this
    shared machine hits all of them alike (fair ratios)."""
    for fn, _ in engines.values():  # warm-up: allocate buffers, first-call graph work
        for it in items[:10]:
            fn(it)
    steps = max(calls for _, calls in engines.values())
    times: dict = {name: [] for name in engines}
    rng = random.Random(0)
    for k in range(steps):
        step = [name for name, (_, calls) in engines.items() if len(times[name]) < calls and not k % (steps // calls)]
        rng.shuffle(step)  # who runs right after whom (e.g. after torch, which flushes caches) varies
        for name in step:
            fn, done = engines[name][0], times[name]
            it = items[len(done) % len(items)]
            t0 = time.perf_counter()
            fn(it)
            done.append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def _route_fn(router):
    return lambda it: router.route(it["question"], it["choices"])


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


def _pass_seconds(router, work) -> float:
    t0 = time.perf_counter()
    router.route_batch(work)  # batch_size None: the engine's default (runtime.BATCH_SIZES)
    return time.perf_counter() - t0


def _throughput(router, items) -> tuple[float, int, int]:
    """(best q/s, copies, passes): the questions are repeated `copies` times so that one pass takes
    >= MIN_PASS_SECONDS (a short first pass only calibrates and is not counted); best of >= 3
    passes and >= BATCH_SECONDS of timed passes (more chances to catch a quiet moment)."""
    router.route_batch(items[:64])  # warm-up
    first = _pass_seconds(router, items)
    copies = max(1, math.ceil(MIN_PASS_SECONDS / first))
    walls = [first] if copies == 1 else []
    work = items * copies
    while len(walls) < 3 or sum(walls) < BATCH_SECONDS:
        walls.append(_pass_seconds(router, work))
    return len(work) / min(walls), copies, len(walls)


def _two_process_worker(folder: str, items, passes: int, barrier, queue) -> None:
    """One of the 2 single-threaded router processes of the '2 cores' throughput figure."""
    sys.path.insert(0, str(REPO))
    from textrouter.runtime import load_router

    router = load_router(folder, "int8", threads=1)
    router.route_batch(items[:64])  # warm-up
    for _ in range(passes):
        barrier.wait()  # both processes start each pass together
        queue.put(_pass_seconds(router, items))


def _two_process_throughput(folder: Path, work, passes: int = 3) -> float:
    """q/s of 2 processes x 1 intra-op thread, each routing half of the questions."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    halves = [work[0::2], work[1::2]]
    procs = [ctx.Process(target=_two_process_worker, args=(str(folder), h, passes, barrier, queue))
             for h in halves]
    for p in procs:
        p.start()
    try:
        walls = [max(queue.get(timeout=600) for _ in procs) for _ in range(passes)]
    finally:
        for p in procs:
            p.join(timeout=60)
    return len(work) / min(walls)


def _wall(args, n: int = 3) -> float:
    """Median wall time of `python ARGS` in a fresh process."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def once():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    return statistics.median(once() for _ in range(n))


def _cold(name: str) -> float:
    code = (f"import textrouter; r = textrouter.load_router({name!r}); "
            "r.route('What is the man saying?', ['hello', 'goodbye'])")
    _wall(["-c", code], n=1)  # warm the OS file cache once (a first ever run reads the model from disk)
    return _wall(["-c", code])


# ---------------------------------------------------------------------------------------------
# the benched networks: one torch policy per engine, exported once


def _minilm_policy():
    from textrouter.model import build_policy

    return build_policy(list(ACTIONS), None, seed=0).eval()


def _static_policy():
    """StaticPolicy over a seeded random table (no ~40 s distillation; speed ignores the values)."""
    import numpy as np
    import torch

    from textrouter.embed_cache import tokenizer
    from textrouter.model import HIDDEN_SIZE
    from textrouter.static import build_static_policy

    torch.manual_seed(0)  # the head's init
    table = np.random.default_rng(0).standard_normal((tokenizer().get_vocab_size(), HIDDEN_SIZE), np.float32)
    return build_static_policy(len(ACTIONS), table=table)


# engine -> (torch policy builder, [(export folder suffix, graph fusion)]: the first is the main export)
BENCH_MODELS = {"minilm": (_minilm_policy, (("fused", True), ("plain", False))),
                "minilm-static": (_static_policy, (("static", True),))}


def _export_same_model(workdir: Path, engine: str):
    """(policy, [folder, ...]): model.onnx + model.int8.onnx of one policy per export variant,
    exported once (minilm: with and without graph fusion)."""
    from textrouter.export import ExportOptions, export_policy
    from textrouter.model import tokenizer_path

    build, variants = BENCH_MODELS[engine]
    policy = build()
    folders = []
    for kind, optimize in variants:
        folder = workdir / f"bench-router-{kind}"
        if not (folder / "router.json").is_file():
            print(f"exporting the {engine} bench model to {folder} (once)", file=sys.stderr)
            export_policy(policy, {"actions": list(ACTIONS), "max_length": 128, "engine": engine}, tokenizer_path(),
                          folder, ExportOptions(min_int8_agreement=0.0, optimize=optimize))  # untrained head
        folders.append(folder)
    return policy, folders


def _bundled_by_engine() -> dict:
    """engine -> bundled router name (from each bundled router.json)."""
    from textrouter.folder import read_router_json
    from textrouter.runtime import available_routers, resolve_router_path

    metas = {n: read_router_json(resolve_router_path(n)) for n in available_routers()}
    return {meta.get("engine", "minilm"): n for n, meta in metas.items()}


def _method(meta: dict) -> str:
    m = meta["metrics"]
    if meta.get("engine", "minilm") != "minilm":
        return m["quantization"]["method"]  # no BERT graph to fuse
    fused = "fused" if (m.get("graph_optimization") or {}).get("applied") else "unfused"
    return f"{m['quantization']['method']}, {fused}"


def run(args) -> dict:
    from textrouter.encoders import available_encoders
    from textrouter.runtime import BATCH_SIZES, load_router

    load_start = os.getloadavg()[0]
    items = _dev_items()
    calls = {"minilm": args.repeats, "minilm-static": args.fast_repeats}
    skipped = [e for e in available_encoders() if e not in BENCH_MODELS]
    if skipped:
        print(f"no bench model for engine(s) {skipped}: add them to BENCH_MODELS", file=sys.stderr)
    bundled = _bundled_by_engine()
    res: dict = {"questions": len(items), "repeats": {}, "cpu_count": os.cpu_count(), "targets": TARGETS,
                 "engines": {}}
    timed, folders = {}, {}
    for engine in (e for e in available_encoders() if e in BENCH_MODELS):
        policy, exported = _export_same_model(Path(args.workdir), engine)
        folders[engine] = exported[0]
        n = calls.get(engine, args.fast_repeats)
        res["repeats"][engine] = n
        int8 = load_router(exported[0], "int8", threads=1)
        routers = {"int8": int8, "fp32": load_router(exported[0], "fp32", threads=1)}
        if len(exported) > 1:
            routers["int8_plain"] = load_router(exported[1], "int8", threads=1)
        e = res["engines"][engine] = {"batch_size": BATCH_SIZES.get(engine), "int8_method": _method(int8.meta)}
        if engine in bundled:
            routers["bundled"] = load_router(bundled[engine], threads=1)
            e.update(bundled_router=bundled[engine], bundled_int8_method=_method(routers["bundled"].meta))
        timed.update({(engine, kind): (_route_fn(r), n) for kind, r in routers.items()})
        timed[(engine, "torch")] = (_torch_route(policy, int8._tokenizer), n)
    if args.old_router:
        old = load_router(args.old_router, threads=1)
        res["engines"][old.engine]["old_router_method"] = _method(old.meta)
        timed[(old.engine, "old_router")] = (_route_fn(old), calls.get(old.engine, args.fast_repeats))
    for (engine, kind), p50 in _interleaved_p50(timed, items).items():
        res["engines"][engine][f"{kind}_p50_ms"] = p50
    for engine, e in res["engines"].items():
        folder = folders[engine]
        e["batched_qps_int8"], copies, passes = _throughput(load_router(folder, "int8", threads=2), items)
        e["batched_pass_questions"], e["batched_passes"] = len(items) * copies, passes
        e["batched_qps_int8_2proc"] = _two_process_throughput(folder, items * copies, passes)
        e["batched_qps_fp32"] = _throughput(load_router(folder, "fp32", threads=2), items)[0]
        if "bundled_router" in e:
            e["cold_s"] = _cold(e["bundled_router"])
        e["torch_over_int8"] = e["torch_p50_ms"] / e["int8_p50_ms"]
        e["fp32_over_int8"] = e["fp32_p50_ms"] / e["int8_p50_ms"]
        e["targets_met"] = {
            "int8_p50_ms": e["int8_p50_ms"] <= TARGETS["int8_p50_ms"],
            "torch_over_int8": e["torch_over_int8"] >= TARGETS["torch_over_int8"],
            "batched_qps": max(e["batched_qps_int8"], e["batched_qps_int8_2proc"]) >= TARGETS["batched_qps"],
            "cold_s": e.get("cold_s", math.inf) < TARGETS["cold_s"],
        }
    res["python_startup_s"] = _wall(["-c", "pass"])
    res["loadavg_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return res


# ---------------------------------------------------------------------------------------------
# the table

UNITS = {"ms": "{:.2f} ms", "q/s": "{:.0f} q/s", "s": "{:.2f} s"}
# (label, result key, unit, key of the int8 reference for the ratio, target key)
ROWS = (
    ("int8 ONNX (bench export), 1 question, 1 thread, p50", "int8_p50_ms", "ms", "int8_p50_ms", "int8_p50_ms"),
    ("int8 ONNX, no graph fusion (optimize=False), p50", "int8_plain_p50_ms", "ms", "int8_p50_ms", None),
    ("fp32 ONNX, 1 question, 1 thread, p50", "fp32_p50_ms", "ms", "int8_p50_ms", None),
    ("torch eager (same model), 1 question, 1 thread, p50", "torch_p50_ms", "ms", "int8_p50_ms", "torch_over_int8"),
    ("bundled router (int8, as shipped), p50", "bundled_p50_ms", "ms", "int8_p50_ms", None),
    ("--old-router (int8), p50", "old_router_p50_ms", "ms", "int8_p50_ms", None),
    ("int8 route_batch, 1 process x 2 threads", "batched_qps_int8", "q/s", "batched_qps_int8", "batched_qps"),
    ("int8 route_batch, 2 processes x 1 thread", "batched_qps_int8_2proc", "q/s", "batched_qps_int8", "batched_qps"),
    ("fp32 route_batch, 1 process x 2 threads", "batched_qps_fp32", "q/s", "batched_qps_int8", None),
    ("cold: import textrouter; load_router(NAME).route(..)", "cold_s", "s", None, "cold_s"),
)
TARGET_TEXT = {"int8_p50_ms": "<= 3 ms", "torch_over_int8": ">= 3x slower", "batched_qps": ">= 1000 q/s",
               "cold_s": "< 1 s"}
INFO_ROWS = (("bundled router", "bundled_router"), ("int8 method: bench export", "int8_method"),
             ("int8 method: bundled router", "bundled_int8_method"), ("int8 method: --old-router", "old_router_method"),
             ("route_batch size (runtime.BATCH_SIZES)", "batch_size"))


def _ratio(value: float, ref: float, unit: str) -> str:
    """value against ref: 'N x slower/faster' for times, 'N x more/fewer' for q/s."""
    r = value / ref if unit != "q/s" else ref / value  # > 1: worse than ref
    if abs(r - 1) < 0.005:
        return "1.00x"
    worse, better = ("fewer", "more") if unit == "q/s" else ("slower", "faster")
    x = r if r > 1 else 1 / r
    return f"{x:.2f}x {worse if r > 1 else better}" if x < 20 else f"{x:.0f}x {worse if r > 1 else better}"


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    engines = res["engines"]
    load = res["loadavg_start_end"]
    t = Table(title=f"router speed ({res['questions']} MMAU-mini dev questions; p50 over "
                    f"{' / '.join(str(n) for n in res['repeats'].values())} calls; load avg {load[0]} -> {load[1]} "
                    f"on {res['cpu_count']} cores)",
              caption="minilm-static bench model: seeded random token table and head (no distillation); "
                      "speed does not depend on the weights")
    t.add_column("measurement", no_wrap=True)
    for name in engines:
        t.add_column(name, justify="right")
        t.add_column("vs int8", justify="right")
    last = list(engines)[-1]
    if len(engines) > 1:
        t.add_column(f"{last} vs {list(engines)[0]}", justify="right")
    t.add_column("target", justify="right")
    t.add_column(f"met ({' / '.join(engines)})", justify="right")
    for label, key in INFO_ROWS:
        if any(key in e for e in engines.values()):
            t.add_row(label, *[c for e in engines.values() for c in (str(e.get(key, "-")), "")],
                      *([""] if len(engines) > 1 else []), "", "")
    t.add_section()
    for label, key, unit, ref, target in ROWS:
        if not any(key in e for e in engines.values()):
            continue
        cells = []
        for e in engines.values():
            v = e.get(key)
            cells += ["-", ""] if v is None else [UNITS[unit].format(v), _ratio(v, e[ref], unit) if ref else ""]
        if len(engines) > 1:
            first, other = engines[list(engines)[0]].get(key), engines[last].get(key)
            cells.append(_ratio(other, first, unit) if first and other else "")
        met = " / ".join("yes" if e["targets_met"][target] else "NO" for e in engines.values()) if target else ""
        t.add_row(label, *cells, TARGET_TEXT.get(target, ""), met)
    t.add_row("  (bare python -c pass, for reference)", UNITS["s"].format(res["python_startup_s"]),
              *[""] * (2 * len(engines) + (len(engines) > 1) + 1))
    Console(width=200).print(t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Router speed benchmark, both engines (one run, ratios).")
    ap.add_argument("--repeats", type=int, default=300, help="single-question calls per minilm engine")
    ap.add_argument("--fast-repeats", type=int, default=3000, help="single-question calls per minilm-static engine")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "audiorouter-bench"),
                    help="where the bench models are exported once and reused")
    ap.add_argument("--old-router", default=None,
                    help="another router folder to time next to the bundled one (e.g. a copy of a previous router)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    if min(args.repeats, args.fast_repeats) < 1:
        ap.error("--repeats and --fast-repeats must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
