#!/usr/bin/env python
"""Long router inputs (issue 16 item 5), measured in one run on both bundled routers.

    python bench/bench_router_long_inputs.py                 # table
    python bench/bench_router_long_inputs.py --json          # one JSON document
    python bench/bench_router_long_inputs.py --tokens 28,120,500,2000 --repeats 300

For questions of growing length (a real dev question's words repeated; token counts measured
with the router's tokenizer), per router:
  - `route` p50 with the folder's truncation policy (textrouter.text: the question is cut to its
    head and tail, words are cut before tokenising, the choices kept), 1 intra-op thread;
  - the old path on the same session: tokenise the whole text and cut it from the end
    (`tokenizer.encode(format_input(q, choices))`, what routers did before the policy), p50;
  - their ratio, and whether two different choice sets give different probabilities
    (the old path: identical once the choices fall behind the cut).
Both paths run interleaved in one loop, so load from other processes hits them alike.
Usable as a section of bench/bench_scaling.py: `tokens_section(args)`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BASE_Q = "What is the second speaker saying about the weather forecast for the weekend in the city?"
CHOICES_A = ["It will rain", "It will be sunny", "It will snow", "Nobody mentions it"]
CHOICES_B = ["A dog barks", "A car horn", "Church bells", "Applause"]


def _question(router, tokens: int) -> str:
    """BASE_Q's words repeated until the question alone has about `tokens` tokens."""
    raw = router._fitter._raw
    words = BASE_Q.split()
    q = BASE_Q
    while len(raw.encode(q, add_special_tokens=False).ids) < tokens:
        q = " ".join((q.split() + words))
    while len(raw.encode(q, add_special_tokens=False).ids) > tokens and len(q.split()) > 1:
        q = " ".join(q.split()[:-1])
    return q


_OLD_TOKENIZERS: dict = {}


def _old_route(router, question: str, choices):
    from textrouter.folder import load_tokenizer
    from textrouter.text import format_input

    if router.folder not in _OLD_TOKENIZERS:  # the folder's tokenizer as routers used it: truncating
        tok = load_tokenizer(router.folder, router.max_length)
        tok.no_padding()
        _OLD_TOKENIZERS[router.folder] = tok
    enc = _OLD_TOKENIZERS[router.folder].encode(format_input(question, choices))  # whole text, cut from the end
    return router._run([enc.ids])[0], bool(enc.overflowing)


def measure(name: str, token_counts, repeats: int) -> list[dict]:
    from textrouter.runtime import load_router

    router = load_router(name, threads=1)
    rows = []
    for n in token_counts:
        q = _question(router, n)
        new_t, old_t = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            router.route(q, CHOICES_A)
            t1 = time.perf_counter()
            _old_route(router, q, CHOICES_A)
            t2 = time.perf_counter()
            new_t.append(t1 - t0)
            old_t.append(t2 - t1)
        new_a, new_b = router.route(q, CHOICES_A), router.route(q, CHOICES_B)
        old_a, old_b = _old_route(router, q, CHOICES_A)[0], _old_route(router, q, CHOICES_B)[0]
        rows.append({
            "router": name, "question_tokens": len(router._fitter._raw.encode(q, add_special_tokens=False).ids),
            "new_p50_ms": statistics.median(new_t) * 1e3, "old_p50_ms": statistics.median(old_t) * 1e3,
            "old_over_new": statistics.median(old_t) / statistics.median(new_t),
            "truncated": new_a["truncated"],
            "choices_change_probs_new": new_a["probs"] != new_b["probs"],
            "choices_change_probs_old": bool((old_a != old_b).any()),
        })
    return rows


def tokens_section(args) -> list[dict]:
    counts = [int(x) for x in str(args.tokens).split(",")]
    rows = []
    for name in ("fast", "default"):
        reps = args.repeats if name == "fast" else max(20, args.repeats // 10)
        rows += measure(name, counts, reps)
    if getattr(args, "json", False):
        return rows
    from rich.console import Console
    from rich.table import Table

    table = Table(title="route() on long questions, 1 thread, p50: new = truncation policy, old = whole-text "
                        "tokenise + cut from the end; A!=B = two choice sets give different probabilities")
    # A!=B: two different choice sets give different probabilities
    for col in ("router", "tokens", "new p50 ms", "old p50 ms", "old/new", "cut", "A!=B new", "A!=B old"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["router"], str(r["question_tokens"]), f"{r['new_p50_ms']:.3f}", f"{r['old_p50_ms']:.3f}",
                      f"{r['old_over_new']:.2f}x", str(r["truncated"]), str(r["choices_change_probs_new"]),
                      str(r["choices_change_probs_old"]))
    Console().print(table)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="28,120,500,2000", help="question lengths in tokens, comma-separated")
    ap.add_argument("--repeats", type=int, default=300, help="calls per length (fast; default router: /10)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = tokens_section(args)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
