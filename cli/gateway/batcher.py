"""Routing off the event loop: concurrent requests share the router through a queue.

Worker loops take the waiting questions and route them in threads (onnxruntime releases the GIL),
so the event loop never runs the ONNX model. For a batch-invariant router (minilm-static) one loop
drains whatever is queued (up to `max_batch`) into one padded Router.route_batch call; other
routers run one loop per core, one question per call, so a decision never depends on which other
requests arrived at the same time. Alone, a question waits for nothing.

Decisions are memoised (LRU, question + choices): routers read only the text, and a decision is a
pure function of it, so a question asked again (the same question over many clips, a retry) is
answered from the memo without queueing or an ONNX pass; the decision says `memo: true`.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Sequence

MEMO_SIZE = 8192   # decisions kept (question + choices -> decision dict, ~1 KB each)


class RouteBatcher:
    """`workers` loops take questions from one queue. A batch-invariant router (minilm-static) gets
    one loop that drains the queue into padded batches; any other router gets one loop per core,
    each routing one question at a time on a 1-thread session (measured, default router, 2 cores:
    2 x 1 thread 559 q/s vs 1 x 2 threads 273 q/s: a 40-token MiniLM pass splits badly over
    threads, and its int8 results must not depend on a batch)."""

    def __init__(self, router, max_batch: int = 32, workers: int | None = None, memo_size: int = MEMO_SIZE):
        import os

        self.router = router
        invariant = bool(getattr(router, "batch_invariant", False))
        self.max_batch = max_batch if invariant else 1
        self.workers = workers or (1 if invariant else max(1, os.cpu_count() or 1))
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self.memo_size = memo_size
        self._memo: OrderedDict[tuple, dict] = OrderedDict()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def route(self, question: str, choices: Sequence[str] | None) -> dict:
        t0 = time.perf_counter()
        key = (question, tuple(choices) if choices else None)
        known = self._memo.get(key)
        if known is not None:
            self._memo.move_to_end(key)
            return {**known, "elapsed_ms": round((time.perf_counter() - t0) * 1e3, 3), "memo": True}
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None, "RouteBatcher.start() not called"
        await self._queue.put(({"question": question, "choices": list(choices) if choices else None}, future))
        routed = await future
        if self.memo_size:
            self._memo[key] = routed
            if len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        return routed

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            items = [item for item, _ in batch]
            try:
                if len(items) == 1:
                    results = [await loop.run_in_executor(None, self._one, items[0])]
                else:
                    results = await loop.run_in_executor(None, self._many, items)
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    def _many(self, items: list[dict]) -> list[dict]:
        # route_batch equals route whatever the batch (textrouter.runtime: routers that are not
        # batch-invariant run one question per ONNX call): a decision never depends on which
        # other requests arrived at the same time
        return self.router.route_batch(items)

    def _one(self, item: dict) -> dict:
        return self.router.route(item["question"], item["choices"])
