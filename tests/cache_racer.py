"""Helper for tests/test_cache.py: processes that create the same new cache files at the same moment.

Run in spawned processes (multiprocessing pickles `race` by this module's name).
"""
from __future__ import annotations

import os
import random
import time


def race(root: str, trials: int, index: int, barrier, results) -> None:
    """For each trial: wait for the others, then open trial's new cache and store one entry.
    Puts (trial, seconds, error text) on `results` for every failure, then None when done."""
    from toolcache.cache import Cache

    for trial in range(trials):
        folder = os.path.join(root, str(trial))
        os.makedirs(folder, exist_ok=True)
        barrier.wait()
        time.sleep(random.random() * 0.002)  # s: spread the opens over the window where they collide
        t0 = time.perf_counter()
        try:
            cache = Cache(folder)
            cache.put_json("tool", {"tool": "race", "audio_sha256": str(index)}, {"trial": trial})
            cache.close()
        except Exception as exc:  # reported to the test, which fails on any
            results.put((trial, round(time.perf_counter() - t0, 3), str(exc)))
    results.put(None)
