"""One table: classifier head (default) vs causal-lm GRPO (paper recipe, TRL) vs audio-aware head.

    python bench/bench_router_compare.py CLIPS_DIR                   # sets A, B, C, everything
    python bench/bench_router_compare.py --sets A --seeds 0 --causal-folds 1 --causal-max-steps 20
    python bench/bench_router_compare.py --causal-base none                 # head rows only (seconds)

Same outer splits for every method (textrouter.evaluate.kfold_indices(n, k, seed)) on the bundled
table (499 questions):

- classifier head: the default `audiorouter train` procedure, nested (bench/bench_routing.run_set);
  train time = one outer-fold fit / the head epochs; route p50 = the bundled default router, 1 thread.
- causal-lm GRPO: textrouter.causal_lm.train_causal (SmolLM2-135M-Instruct, LoRA r16/a32/d0.05,
  lr 5e-5, beta 0.01, format warm-up, 1 epoch) on each outer training part, scored on the held-out
  fold by the torch policy's argmax of its action log-probs (default score "decision",
  textrouter.causal_scorer; the exported ONNX router agrees with it
  by its export check). `--causal-folds F` runs only the first F folds of each seed and
  `--causal-max-steps N` caps the optimiser steps (training time per epoch is then extrapolated from
  the measured mean step time; the table says so). Route p50: the fold-0 model exported to ONNX
  (textrouter.causal_export), int8 if it passed its agreement check, 1 thread, 30 questions.
- audio-aware head: bench/bench_audio_aware.py run as a subprocess on CLIPS_DIR (its own rows: those
  with a clip; it reports text-only on the same rows for reference). Skipped without CLIPS_DIR.

Progress on stderr; the rich table on stdout; --json for the raw figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_routing import ROUTER, parse_sets, set_outcomes  # noqa: E402


def route_p50(router, rows, n: int = 30) -> float:
    ms = [router.route(r.question, list(r.choices))["elapsed_ms"] for r in rows[:n + 3]][3:]  # 3 warm-up calls
    return float(statistics.median(ms))


def head_rows(x, o, actions, seeds, k, bar):
    from textrouter.grpo import HEAD_EPOCHS, TrainOptions
    from textrouter.selection import get_candidates

    job = bar.add_task("classifier head (nested CV)", total=len(seeds) * k)
    t0 = time.perf_counter()
    summary, _ = run_set_head(x, o, actions, get_candidates("auto"), TrainOptions(mode="head"), seeds, k,
                              progress=lambda: bar.advance(job))
    per_fold = (time.perf_counter() - t0) / (len(seeds) * k)
    return summary, per_fold / HEAD_EPOCHS  # s per epoch (selection included: an upper bound)


def run_set_head(*a, **kw):
    from bench_routing import run_set

    return run_set(*a, **kw)


def causal_rows(texts, o, actions, seeds, k, folds, opts, bar, export_dir: Path | None, rows):
    from textrouter import causal_lm as C
    from textrouter.evaluate import kfold_indices

    accs, rates, step_s, epoch_s, p50 = [], [], [], [], None
    base = C.load_base(opts.base)  # loaded once (~20 s); each fold trains a fresh LoRA on a copy
    import copy

    n_jobs = len(seeds) * folds
    job = bar.add_task("causal-lm GRPO (TRL)", total=n_jobs)
    for seed in seeds:
        for f, (tr, te) in enumerate(kfold_indices(len(o), k, seed)):
            if f >= folds:
                break
            res = C.train_causal([texts[i] for i in tr], o[tr], actions, opts,
                                 base=(copy.deepcopy(base[0]), base[1]))
            scorer = C.build_scorer(res.model, res.tokenizer, res.prompt)
            lp = C.score_texts(scorer, res.tokenizer, [texts[i] for i in te], opts.max_length)
            ch = lp.argmax(1)
            accs.append(float(o[te][np.arange(len(te)), ch].mean()))
            rates.append(float((ch != 0).mean()))
            mean_step = float(np.mean(res.step_s)) if res.step_s else float("nan")
            step_s.append(mean_step)
            full_steps = int(np.ceil(len(tr) / opts.prompts_per_step)) + opts.warmup_steps
            epoch_s.append(mean_step * full_steps)
            if export_dir is not None and p50 is None:
                import textrouter
                from textrouter import causal_export as E

                doc = E.export_causal(res.model, res.tokenizer, res.prompt, export_dir, [texts[i] for i in te],
                                      {"base": opts.base}, max_length=opts.max_length)
                prec = "int8" if "model.int8.onnx" in doc["files"] else "fp32"
                p50 = (route_p50(textrouter.load_router(export_dir, precision=prec, threads=1), rows), prec,
                       doc["metrics"])
            bar.advance(job)
    return {"mean": float(np.mean(accs)), "sd": float(np.std(accs)), "n_folds": len(accs),
            "tool_call_rate": float(np.mean(rates)), "step_s": float(np.mean(step_s)),
            "epoch_s": float(np.mean(epoch_s)), "capped": opts.max_steps is not None,
            "route_p50_ms": None if p50 is None else p50[0], "route_precision": None if p50 is None else p50[1],
            "export_metrics": None if p50 is None else p50[2]}


def audio_rows(clips: Path, sets, seeds, k, bar) -> dict | None:
    if clips is None or not clips.is_dir():
        return None
    job = bar.add_task("audio-aware head (bench_audio_aware.py)", total=1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audio.json"
        cmd = [sys.executable, str(HERE / "bench_audio_aware.py"), str(clips), "--sets", ",".join(sets),
               "--seeds", ",".join(map(str, seeds)), "--k", str(k), "--json", str(out)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        bar.advance(job)
        if run.returncode != 0 or not out.is_file():
            return {"error": (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]}
        return json.loads(out.read_text())


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from textrouter import causal_lm as C
    from textrouter.table import BUNDLED_TABLE, load_table, texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", nargs="?", type=Path, help="MMAU clips folder for the audio-aware row (optional)")
    ap.add_argument("--sets", default="A,B,C")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--k", type=int, default=5, help="outer folds")
    ap.add_argument("--causal-base", default=C.DEFAULT_BASE, help="base LM, a local HF folder, or 'none' to skip")
    ap.add_argument("--causal-folds", type=int, default=5, help="outer folds per seed the causal-lm trains on")
    ap.add_argument("--causal-max-steps", type=int, default=None, help="cap on GRPO steps per fold (timing runs)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (2 cores here)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sets = parse_sets(ap, args.sets)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = load_table(BUNDLED_TABLE)
    tx = texts(table)
    console = Console()
    doc: dict = {"n": len(table), "seeds": seeds, "k": args.k, "sets": {}}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        from textrouter.encoders import get_encoder

        x = get_encoder("minilm").features(tx, 128)
        import textrouter

        head_p50 = route_p50(textrouter.load_router("default", threads=1), table.rows)
        for s in sets:
            mapping, o = set_outcomes(table, s)
            summary, head_epoch_s = head_rows(x, o, mapping.actions, seeds, args.k, bar)
            entry = {"head": {**summary[ROUTER], "epoch_s": head_epoch_s, "route_p50_ms": head_p50},
                     "always_direct": summary["always direct"], "oracle": summary["oracle"]}
            if args.causal_base != "none":
                opts = C.CausalOptions(base=args.causal_base, max_steps=args.causal_max_steps, threads=args.threads)
                with tempfile.TemporaryDirectory() as tmp:
                    entry["causal"] = causal_rows(tx, o, mapping.actions, seeds, args.k,
                                                  min(args.causal_folds, args.k), opts, bar, Path(tmp) / "router",
                                                  table.rows)
            doc["sets"][s] = entry
        audio = audio_rows(args.clips, sets, seeds, args.k, bar)
    doc["audio"] = audio
    out = Table(title=f"Routers on the bundled table ({len(table)} q): routed accuracy %, mean ± sd over "
                      f"{len(seeds)} seed(s) x {args.k} outer folds; train s/epoch on {args.threads} cores; "
                      "route p50 ms, 1 thread")
    out.add_column("router")
    for s in sets:
        out.add_column(f"{s} acc", justify="right")
    out.add_column("train s/epoch", justify="right")
    out.add_column("route p50", justify="right")

    def cell(r):
        return "-" if r is None else f"{100 * r['mean']:.1f} ± {100 * r['sd']:.1f}"

    first = doc["sets"][sets[0]]
    out.add_row("classifier head (default, nested)", *[cell(doc["sets"][s]["head"]) for s in sets],
                f"{first['head']['epoch_s']:.2f}", f"{head_p50:.1f}")
    if "causal" in first:
        c = first["causal"]
        note = f" ({c['n_folds']} folds" + (", steps capped: epoch extrapolated" if c["capped"] else "") + ")"
        out.add_row("causal-lm GRPO (paper recipe)" + note, *[cell(doc["sets"][s]["causal"]) for s in sets],
                    f"{c['epoch_s']:.0f}", "-" if c["route_p50_ms"] is None else
                    f"{c['route_p50_ms']:.0f} ({c['route_precision']})")
    if audio and "sets" in audio:
        for label, key in (("audio-aware head (clip rows only)", "audio-aware"), ("  text-only head, same rows", "text")):
            cells = []
            for s in sets:
                sm = (audio["sets"].get(s) or {}).get("summary", {})
                name = next((n for n in sm if n.lower().startswith(key)), None)
                cells.append(cell(sm.get(name)) if name else "-")
            out.add_row(label, *cells, "-", "-")
    else:
        out.add_row("audio-aware head", *["skipped" if audio is None else "failed"] * len(sets), "-", "-")
    out.add_row("always direct", *[cell(doc["sets"][s]["always_direct"]) for s in sets], "-", "-")
    out.add_row("oracle", *[cell(doc["sets"][s]["oracle"]) for s in sets], "-", "-")
    console.print(out)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
