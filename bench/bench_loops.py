"""Memory and speed of the dataset loops (`batch`, `collect`) as the dataset grows (issue 16 item 6).

    python bench/bench_loops.py [--sizes 50,200,1000] [--loops batch,collect] [--code /path/to/checkout]
    python bench/bench_loops.py --interrupt [--trials 3] [--code ...]   # Ctrl-C during batch (issue 12 item 14)

For each loop and size, a fresh child process loads the dataset (N questions on the repo's own
examples/audio/birds-10s.wav, each question worded differently so no reasoner answer is a cache
hit), the bundled default router and the `openai` reasoner pointed at the loopback test server
(tests/openai_server.py in its own process, recording no bodies), then runs the loop through its
Python API and reports:
  traced peak  - peak Python heap allocated *during the loop* (tracemalloc, started after the
                 dataset and the router are loaded): what the loop itself holds;
  peak RSS     - the child's peak resident set (ru_maxrss), everything included (onnxruntime...);
  q/s          - questions per second (wall clock, tracemalloc on: slower than a real run).
"x smallest" is each figure divided by the smallest size's, in the same run, and "KB per extra
question" the traced peak's growth per question beyond the smallest size: a loop whose rows stay
on disk is flat (what remains is an id and a file offset per question); one that keeps every row
in memory grows by the row's size per question.
`--code` runs the children against another checkout (e.g. `git worktree` of an older commit) to
compare; the test server always comes from this checkout. `run(args)` is the section function
for bench/bench_scaling.py's SECTIONS.
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
CLIP = "birds-10s.wav"
QUESTION = "Which animal makes the sound in the recording?"
CHOICES = ["Bird", "Dog", "Cow", "Frog"]
TOOLS_FOR_COLLECT = ["sound_duration"]  # cheap, cached after the first clip: the loop dominates


def _start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--port", "0", "--no-record",
                             "--max-requests", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # "serving http://127.0.0.1:PORT/v1 (model ...); Ctrl-C to stop"
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"test server did not start: {line!r}")
    return proc, line.split()[1]


def _child(args) -> None:
    """Runs in the child: one loop over N questions, prints one JSON line."""
    import resource
    import tracemalloc

    from cli import datasets, pipeline

    work = Path(args.workdir)
    ds_path = work / "q.jsonl"
    with open(ds_path, "w") as fh:
        for i in range(args.child):
            fh.write(json.dumps({"id": f"q{i}", "audio": CLIP, "task": "sound", "question": f"{QUESTION} (take {i})",
                                 "choices": CHOICES, "answer": "Bird"}) + "\n")
    ds = datasets.load_dataset(ds_path, audio_root=REPO / "examples" / "audio")
    reasoner = pipeline.ReasonerConfig(name="openai", url=args.url, model="test-audio-llm", concurrency=8).create()
    tracemalloc.start()
    if args.loop == "batch":
        from cli import batching

        router = pipeline.load_router(None)
        router.route("warm-up question?", ["a", "b"])
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        batching.batch(ds, router, reasoner, work / "pred.json", chunk_size=8)
    else:
        from cli import collecting

        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        collecting.collect(ds, reasoner, TOOLS_FOR_COLLECT, work / "table.jsonl", chunk_size=8)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    reasoner.close()
    print(json.dumps({"n": args.child, "traced_peak_mb": peak / 2**20,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))


def run(args) -> list[dict]:
    """Measure every (loop, size); print one table per loop; return the rows."""
    from rich.console import Console
    from rich.table import Table

    sizes = [int(s) for s in str(getattr(args, "sizes", "50,200,1000")).split(",")]
    loops = [s for s in str(getattr(args, "loops", "batch,collect")).split(",") if s]
    code = Path(getattr(args, "code", None) or REPO).resolve()
    server, url = _start_server()
    rows = []
    try:
        for loop in loops:
            results = []
            for n in sizes:
                with tempfile.TemporaryDirectory(prefix="bench-loops-") as work:
                    env = dict(os.environ, PYTHONPATH=str(code), AUDIOROUTER_CACHE_DIR=str(Path(work) / "cache"),
                               HF_HUB_OFFLINE="1")
                    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(n),
                                          "--loop", loop, "--url", url, "--workdir", work],
                                         cwd=code, env=env, capture_output=True, text=True, timeout=1800)
                if out.returncode != 0:
                    raise SystemExit(f"{loop} n={n} failed: {out.stderr[-2000:]}")
                results.append(dict(json.loads(out.stdout.strip().splitlines()[-1]), loop=loop))
            base = results[0]
            table = Table(title=f"{loop} loop memory vs dataset size (code: {code})", title_justify="left")
            for col in ("questions", "traced peak MB", "x smallest", "KB per extra question", "peak RSS MB",
                        "x smallest", "q/s"):
                table.add_column(col, justify="right")
            for r in results:
                extra = r["n"] - base["n"]
                slope = (f"{(r['traced_peak_mb'] - base['traced_peak_mb']) * 1024 / extra:.2f}" if extra else "-")
                table.add_row(str(r["n"]), f"{r['traced_peak_mb']:.2f}", f"{r['traced_peak_mb'] / base['traced_peak_mb']:.2f}",
                              slope, f"{r['maxrss_mb']:.0f}", f"{r['maxrss_mb'] / base['maxrss_mb']:.2f}",
                              f"{r['n'] / r['seconds']:.0f}")
            Console().print(table)
            rows += results
    finally:
        server.terminate()
        server.wait(timeout=10)
    return rows


def run_interrupt(args) -> list[float]:
    """SIGINT to a `batch` subprocess with 4 reasoner requests in flight against a server that
    answers after 30 s: seconds until it exits (130), per trial, printed as a table."""
    import signal

    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(REPO / "tests"))
    from openai_server import OpenAITestServer

    code = Path(getattr(args, "code", None) or REPO).resolve()
    times = []
    table = Table(title=f"Ctrl-C during batch, 4 requests in flight (code: {code})", title_justify="left")
    for col in ("trial", "exit code", "seconds to exit"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(prefix="bench-sigint-") as work:
        ds = Path(work) / "q.jsonl"
        ds.write_text("".join(json.dumps({"id": f"q{i}", "audio": CLIP, "question": f"{QUESTION} ({i})",
                                          "choices": CHOICES, "answer": "Bird"}) + "\n" for i in range(8)))
        for trial in range(int(getattr(args, "trials", 3))):
            with OpenAITestServer(default_fault="slow", slow_s=30.0) as server:
                env = dict(os.environ, PYTHONPATH=str(code), AUDIOROUTER_CACHE_DIR=str(Path(work) / f"cache{trial}"))
                proc = subprocess.Popen([sys.executable, "-m", "cli.main", "batch", str(ds), "--out",
                                         str(Path(work) / f"p{trial}.json"), "--audio-root", str(REPO / "examples" / "audio"),
                                         "--reasoner-url", server.url, "--model", server.model, "--timeout", "60",
                                         "--concurrency", "4"], cwd=code, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 120
                while server.in_flight < 4 and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.02)
                t0 = time.monotonic()
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=120)
                times.append(time.monotonic() - t0)
                table.add_row(str(trial), str(proc.returncode), f"{times[-1]:.2f}")
    Console().print(table)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200,1000", help="comma-separated dataset sizes (questions)")
    ap.add_argument("--loops", default="batch,collect", help="comma-separated: batch, collect")
    ap.add_argument("--code", default=None, help="checkout whose cli/ the children import (default: this one)")
    ap.add_argument("--interrupt", action="store_true", help="measure Ctrl-C during batch instead")
    ap.add_argument("--trials", type=int, default=3, help="--interrupt: trials")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--loop", default="batch", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
    elif args.interrupt:
        run_interrupt(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
