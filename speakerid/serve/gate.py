"""Admission control on the event loop: a bounded number of holders, a bounded queue, a deadline.

A request that cannot get a slot within ``timeout_s`` (or finds ``waiting_n`` requests already
queued) fails at once with 503 and a Retry-After estimated from how long slots are held, so a
client is never left hanging. Everything here runs on the event loop thread (no locks).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from .errors import ApiError

__all__ = ["Gate"]

T = TypeVar("T")


class Gate:
    def __init__(self, slots: int, waiting_n: int, timeout_s: float, busy_code: str, what: str) -> None:
        self.slots, self.waiting_n, self.timeout_s = slots, waiting_n, timeout_s
        self.busy_code, self.what = busy_code, what
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._hold_s = 0.05  # running mean of how long a slot is held (for Retry-After)
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self.slots - self._free

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self._hold_s * (len(self._waiters) + 1) / self.slots))

    def _busy_error(self, why: str) -> ApiError:
        return ApiError(self.busy_code, f"{self.what} is busy ({why}); retry later",
                        retry_after_s=self.retry_after_s())

    def _closed_error(self) -> ApiError:
        return ApiError("SHUTTING_DOWN", "the server is shutting down", retry_after_s=self.retry_after_s())

    async def _acquire(self) -> None:
        if self.closed:
            raise self._closed_error()
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        if len(self._waiters) >= self.waiting_n:
            raise self._busy_error(f"{len(self._waiters)} requests already waiting")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)

        def expire() -> None:
            if not fut.done():
                fut.set_exception(self._busy_error(f"no slot free within {self.timeout_s:g} s"))

        timer = loop.call_later(self.timeout_s, expire)
        try:
            await fut
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            elif fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release()  # handed a slot just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next waiter
                return
        self._free += 1

    async def run(self, executor: Executor, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in ``executor`` once a slot is free. The slot is held until the thread
        is done, even when the request is cancelled meanwhile (a client that hung up), so the
        executor never has more work than slots."""
        await self._acquire()
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(executor, fn, *args)
        except RuntimeError:  # the executor is shut down
            self._release()
            raise self._closed_error() from None

        def done(_: object) -> None:
            self._hold_s = 0.8 * self._hold_s + 0.2 * (time.monotonic() - t0)
            self._release()

        fut.add_done_callback(done)
        return await asyncio.shield(fut)

    def close(self) -> None:
        """Refuse new requests and fail every waiting one with 503 SHUTTING_DOWN."""
        self.closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(self._closed_error())
