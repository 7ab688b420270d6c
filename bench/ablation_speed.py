"""Training speed of the two GRPO modes, measured in one run on the bundled real table.

    python bench/ablation_speed.py [--lora-questions 64]

head mode: frozen MiniLM embeddings (computed once, uncached here so the cost is visible) + GRPO on
the head for the default 10 epochs over all 499 questions. lora mode (paper): one epoch of LoRA +
head on the first N questions (batch 16); its per-question cost extrapolates to the full table.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from textrouter.embed_cache import compute_embeddings
    from textrouter.grpo import TrainOptions, train_head, train_lora
    from textrouter.table import BUNDLED_TABLE, DEFAULT_MAPPING, load_table, outcome_matrix, texts

    ap = argparse.ArgumentParser()
    ap.add_argument("--lora-questions", type=int, default=64)
    args = ap.parse_args()
    table = load_table(BUNDLED_TABLE, DEFAULT_MAPPING)
    xs, o = texts(table), outcome_matrix(table, DEFAULT_MAPPING)
    n = len(xs)
    t0 = time.perf_counter()
    x = compute_embeddings(xs)
    t_emb = time.perf_counter() - t0
    head = train_head(x, o, TrainOptions(mode="head"))
    k = args.lora_questions
    lora = train_lora(xs[:k], o[:k], DEFAULT_MAPPING.actions, TrainOptions(mode="lora"))
    lora_full = lora.elapsed_s / k * n
    t = Table(title=f"GRPO training time, {n} questions, torch threads {torch.get_num_threads()}")
    for c in ("stage", "measured", "per question", "499 questions", "vs head total"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    head_total = t_emb + head.elapsed_s
    t.add_row("head: embeddings (once, then cached)", f"{t_emb:.1f} s", f"{1000 * t_emb / n:.1f} ms", f"{t_emb:.1f} s", "")
    t.add_row(f"head: GRPO {head.options.n_epochs} epochs", f"{head.elapsed_s:.1f} s",
              f"{1000 * head.elapsed_s / n:.1f} ms", f"{head.elapsed_s:.1f} s", "")
    t.add_row("head: total", "", "", f"{head_total:.1f} s", "1.0x")
    t.add_row(f"lora: 1 epoch on {k} questions", f"{lora.elapsed_s:.1f} s", f"{1000 * lora.elapsed_s / k:.0f} ms",
              f"{lora_full:.0f} s (extrapolated)", f"{lora_full / head_total:.1f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
