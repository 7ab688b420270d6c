"""Does a router that also sees the clip route better? Nested CV: text-only vs audio-aware vs audio-only head.

    python bench/bench_audio_aware.py CLIPS_DIR                  # sets A, B, C; seeds 0,1,2 x 5 outer folds
    python bench/bench_audio_aware.py CLIPS_DIR --sets A --seeds 0 --json out.json

CLIPS_DIR holds the bundled table's clips (`<id>.wav`, the table's `audio` field); they are never
copied into the repo. Rows whose clip is absent are dropped for EVERY variant and baseline, so all
rows of the table below are scored on the same questions (412 of 499 with the MMAU folder here).
Without the folder the bench says so and exits 0.

Audio features: the `audio_embedding` tool (toolcache, cached like every tool: YAMNet 1024-d mean
and max embedding, duration, speech/music/silence fractions). Feature blocks (inner-CV choice):
  scalars       duration + 3 fractions (4 dims)
  pca16         PCA-16 of the mean embedding + the 4 scalars (20 dims)
  mean          the whole mean embedding + the 4 scalars (1028 dims)
Every audio dimension is z-scored on the outer training rows (PCA fitted there too) and scaled to
the MiniLM embedding's global sd (0.16) times a weight (1 or 3, an inner-CV choice for the
audio-aware head: at weight 1 the 4 scalar dims are drowned by the 384 text dims).

For each set, seed and outer fold, on the outer training part only: for each feature config
(text: the MiniLM embedding; audio-aware: MiniLM ⊕ one block; audio-only: one block) the project's
default head procedure (textrouter.selection.select: recipe candidates "auto" scored by 4-fold inner
CV, decision rule fitted on the inner out-of-fold probabilities) gives an inner-CV score; the best
config (ties: the simpler) is refit on the whole outer training part (selection.fit_ensemble) and
scored on the held-out fold. Same splits for always-direct, best single (chosen on the training
part) and the oracle. Printed: mean ± sd over seeds x outer folds, tool-call rate, the configs
picked, and the routing cost of the audio_embedding tool (p50 ms per clip, cold and cache hit).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_routing import parse_sets, results_table, set_outcomes  # noqa: E402  (same action sets A, B, C as the routing bench)

TOOL = "audio_embedding"
BLOCKS = ("scalars", "pca16", "mean")
PCA_DIMS = 16
WEIGHTS = (1.0, 3.0)   # audio block x this (inner choice, audio-aware only): 4 scalar dims at the text's
                       # scale are drowned by 384 text dims (first run: text+scalars picked, +0.0..0.2 pts)
TEXT_ONLY, AWARE, AUDIO_ONLY = "text-only head (MiniLM)", "audio-aware head (MiniLM+YAMNet)", "audio-only head (YAMNet)"


def variants(weights=WEIGHTS) -> dict[str, list[tuple[bool, str | None, float]]]:
    """row name -> the feature configs its inner CV chooses among: (uses text, audio block or None, weight)."""
    return {
        TEXT_ONLY: [(True, None, 1.0)],
        AWARE: [(True, b, float(w)) for b in BLOCKS for w in weights],
        AUDIO_ONLY: [(False, b, 1.0) for b in BLOCKS],   # alone, the weight only rescales the head's lr
    }


def clip_path(row, clips_dir: Path) -> Path:
    return clips_dir / str(row.metadata.get("audio") or f"{row.id}.wav")


def audio_results(paths, progress=None) -> list[dict]:
    """`audio_embedding` results (the envelope's `result`) through the tool cache."""
    import toolcache

    out = []
    for p in paths:
        out.append(toolcache.run(TOOL, str(p))["result"])
        if progress:
            progress()
    return out


def routing_cost(paths, n: int = 20) -> dict:
    """p50 ms per clip of the tool: cold (no cache, per-clip memo cleared: decode + hash + YAMNet)
    and a cache hit, on the first `n` clips; the one-off model load is timed separately."""
    import toolcache
    from toolcache.tools import embedding

    paths = list(paths)[:n]
    t0 = time.perf_counter()
    embedding._session()
    load_ms = 1e3 * (time.perf_counter() - t0)
    cold, hit = [], []
    for p in paths:
        embedding.clear_memo()
        t = time.perf_counter()
        toolcache.run(TOOL, str(p), cache=False)
        cold.append(1e3 * (time.perf_counter() - t))
    for p in paths:
        toolcache.run(TOOL, str(p))          # stored by the feature pass already; make sure
        t = time.perf_counter()
        env = toolcache.run(TOOL, str(p))
        hit.append(1e3 * (time.perf_counter() - t))
        assert env["cached"], "second run must be a cache hit"
    return {"n_clips": len(paths), "cold_p50_ms": statistics.median(cold), "hit_p50_ms": statistics.median(hit),
            "model_load_ms": load_ms}


def block_features(raw: dict[str, np.ndarray], block: str, tr: np.ndarray, scale: float) -> np.ndarray:
    """[N, d] audio block, standardised with statistics of the training rows `tr` only."""
    def z(a):
        mu, sd = a[tr].mean(0), a[tr].std(0)
        return (a - mu) / np.where(sd > 1e-6, sd, 1.0)   # constant dims (e.g. a never-silent set) stay 0

    scal = z(raw["scalars"])
    if block == "scalars":
        parts = [scal]
    elif block == "mean":
        parts = [z(raw["mean"]), scal]
    elif block == "pca16":
        zm = z(raw["mean"])
        _, _, vt = np.linalg.svd(zm[tr] - zm[tr].mean(0), full_matrices=False)
        parts = [z(zm @ vt[:PCA_DIMS].T), scal]
    else:
        raise ValueError(f"block {block!r} unknown; valid: {', '.join(BLOCKS)}")
    return (scale * np.concatenate(parts, axis=1)).astype(np.float32)


def config_features(xt, raw, cfg, tr, scale):
    use_text, block, weight = cfg
    parts = ([xt] if use_text else []) + ([block_features(raw, block, tr, scale * weight)] if block else [])
    return np.concatenate(parts, axis=1)


def config_name(cfg) -> str:
    use_text, block, weight = cfg
    name = "+".join((["text"] if use_text else []) + ([block] if block else []))
    return name if weight == 1.0 else f"{name}x{weight:g}"


def run_set(xt, raw, o, actions, candidates, base, seeds, k, scale, weights=WEIGHTS, progress=None):
    from textrouter import baselines as B
    from textrouter.evaluate import kfold_indices
    from textrouter.grpo import head_probs
    from textrouter.selection import fit_ensemble, select

    rows: dict[str, list[tuple[float, float]]] = {}
    configs = variants(weights)
    picks: dict[str, list[str]] = {v: [] for v in configs}

    def add(name, chosen, te):
        ch = np.asarray(chosen)
        rows.setdefault(name, []).append((float(o[te][np.arange(len(te)), ch].mean()), float((ch != 0).mean())))

    for seed in seeds:
        for tr, te in kfold_indices(len(o), k, seed):
            for variant, cfgs in configs.items():
                best = None
                for cfg in cfgs:        # inner CV on the outer training rows only
                    x = config_features(xt, raw, cfg, tr, scale)
                    sel = select(x[tr], o[tr], actions, base, candidates, seed=seed)
                    score = max(sel.scores.values()) if sel.scores else 0.0
                    if best is None or round(score, 9) > round(best[0], 9):
                        best = (score, cfg, x, sel)
                _, cfg, x, sel = best
                probs = head_probs(x[te], fit_ensemble(x[tr], o[tr], sel.candidate, base, seed))
                add(variant, sel.rule.choose(probs), te)
                picks[variant].append(config_name(cfg))
                if progress:
                    progress()
            add("always direct", np.zeros(len(te), int), te)
            add("best single (chosen on train folds)", B.best_single(xt[tr], o[tr], xt[te], len(te)), te)
            rows.setdefault("oracle", []).append((B.oracle_accuracy(o[te]), float("nan")))
    summary = {}
    for name, vals in rows.items():
        acc = np.array([v[0] for v in vals])
        rate = np.array([v[1] for v in vals])
        summary[name] = {"mean": float(acc.mean()), "sd": float(acc.std()), "n_folds": len(acc),
                         "tool_call_rate": None if np.isnan(rate).all() else float(np.nanmean(rate)),
                         "per_fold": acc.tolist()}
    return summary, picks


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from textrouter.encoders import get_encoder
    from textrouter.grpo import TrainOptions
    from textrouter.selection import get_candidates
    from textrouter.table import BUNDLED_TABLE, load_table, texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips_dir", type=Path, help="folder with the bundled table's clips (<id>.wav)")
    ap.add_argument("--sets", default="A,B,C")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", type=int, default=5, help="outer folds")
    ap.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHTS),
                    help="audio-block weights the audio-aware head's inner CV chooses among")
    ap.add_argument("--latency-clips", type=int, default=20, help="clips timed for the routing cost")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    console, err = Console(), Console(stderr=True)
    if not console.is_terminal:
        console = Console(width=120)           # piped or logged: keep the table on one line per row
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = parse_sets(ap, args.sets)
    if not args.clips_dir.is_dir():
        err.print(f"skipped: clips folder {args.clips_dir} not found (give the folder holding the table's <id>.wav clips)")
        return 0
    table = load_table(BUNDLED_TABLE)
    keep = [i for i, r in enumerate(table.rows) if clip_path(r, args.clips_dir).is_file()]
    if len(keep) < 50:
        err.print(f"skipped: only {len(keep)} of the table's {len(table)} clips are in {args.clips_dir} (need >= 50)")
        return 0
    sub = table.subset(keep)
    paths = [clip_path(r, args.clips_dir) for r in sub.rows]
    xt = get_encoder("minilm").features(texts(sub), 128)   # cached on disk after the first run
    cost = routing_cost(paths, args.latency_clips)     # first: the model load is then really timed
    t0 = time.perf_counter()
    with Progress(console=err, transient=True) as bar:
        job = bar.add_task(f"{TOOL} ({len(paths)} clips, cached after the first run)", total=len(paths))
        res = audio_results(paths, progress=lambda: bar.advance(job))
    feat_s = time.perf_counter() - t0
    from toolcache.tools.embedding import SCALAR_FEATURES, feature_vector

    raw = {"mean": np.stack([feature_vector(r, ["mean"]) for r in res]),
           "scalars": np.stack([feature_vector(r, ["scalars"]) for r in res]).astype(np.float64)}
    scale = float(xt.std())                                # MiniLM's global sd: audio dims start at the same size
    base = TrainOptions(mode="head", encoder="minilm")
    candidates = get_candidates("auto")
    try:
        weights = [float(w) for w in args.weights.split(",")]
    except ValueError:
        weights = []
    if not weights or not all(w > 0 and np.isfinite(w) for w in weights):
        ap.error(f"--weights {args.weights!r}: give positive numbers, e.g. 1,3")
    n_fits = len(seeds) * args.k * 3
    doc = {"table": BUNDLED_TABLE.name, "n_table": len(table), "n_with_clip": len(sub), "seeds": seeds, "k": args.k,
           "blocks": list(BLOCKS), "weights": weights, "scale": scale, "feature_seconds": feat_s, "routing_cost": cost,
           "scalar_means": dict(zip(SCALAR_FEATURES, raw["scalars"].mean(0).round(3).tolist())), "sets": {}}
    summaries = {}
    with Progress(console=err, transient=True) as bar:
        for s in sets:
            mapping, o = set_outcomes(sub, s)
            job = bar.add_task(f"set {s}", total=n_fits)
            t1 = time.perf_counter()
            summary, picks = run_set(xt, raw, o, mapping.actions, candidates, base, seeds, args.k, scale,
                                     weights, progress=lambda: bar.advance(job))
            summaries[s] = summary
            doc["sets"][s] = {"actions": mapping.to_dict(), "summary": summary, "picks": picks,
                              "seconds": time.perf_counter() - t1}
    console.print(results_table(
        f"Nested CV, {len(sub)} of {len(table)} bundled questions (those with a clip; every row on the same "
        f"questions): routed accuracy %, mean ± sd over {len(seeds)} seeds x {args.k} outer folds",
        summaries, sets, highlight=AWARE))
    for s in sets:
        sm, pk = summaries[s], doc["sets"][s]["picks"]
        diff = np.array(sm[AWARE]["per_fold"]) - np.array(sm[TEXT_ONLY]["per_fold"])
        chosen = {v: {c: pk[v].count(c) for c in sorted(set(pk[v]))} for v in (AWARE, AUDIO_ONLY)}
        console.print(f"set {s}: audio-aware - text-only {100 * diff.mean():+.1f} pts (paired per fold: sd "
                      f"{100 * diff.std():.1f}, wins {int((diff > 0).sum())}/{len(diff)}, losses {int((diff < 0).sum())}); "
                      f"picks aware {chosen[AWARE]}, audio-only {chosen[AUDIO_ONLY]}; {doc['sets'][s]['seconds']:.0f} s")
    ct = Table(title=f"Routing cost of {TOOL} (p50 over {cost['n_clips']} clips, this machine, shared CPU)")
    for c in ("cold: decode + hash + YAMNet (ms)", "cache hit (ms)", "model load, once per process (ms)"):
        ct.add_column(c, justify="right")
    ct.add_row(f"{cost['cold_p50_ms']:.0f}", f"{cost['hit_p50_ms']:.2f}", f"{cost['model_load_ms']:.0f}")
    console.print(ct)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
