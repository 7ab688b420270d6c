"""Micro-batching of routing calls: concurrent requests share one Router.route_batch call.

A single worker takes the first waiting question, then whatever else is already queued (up to
`max_batch`), and routes them together in a thread (onnxruntime releases the GIL), so the event
loop never runs the ONNX model and a burst of N questions costs one thread hop and, for
batch-invariant engines (minilm-static), one padded batch instead of N single passes. Alone, a
question waits for nothing: the worker starts as soon as it arrives.
"""
from __future__ import annotations

import asyncio
from typing import Sequence


class RouteBatcher:
    def __init__(self, router, max_batch: int = 32):
        self.router = router
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def route(self, question: str, choices: Sequence[str] | None) -> dict:
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None, "RouteBatcher.start() not called"
        await self._queue.put(({"question": question, "choices": list(choices) if choices else None}, future))
        return await future

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
