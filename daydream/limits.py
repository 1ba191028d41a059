"""Concurrency caps on model calls (SPEC §7): a global cap on calls in flight plus one cap per
concurrency key (model string, endpoint and key variable: one account), shared by every thread
of the run (`Run.limits`: one per Runtime). A slot is held for one attempt only, never while
sleeping between attempts, so a rate-limited model does not starve the others.

A call made on the call engine's event loop (`daydream.engine`, `calls.acall_model`) takes its
slot with `aslot`: the same caps, counted by the same semaphores, waited for on the loop. It
never blocks the loop: it takes a slot at once when one is free, else it waits for a slot
released by any call, thread or coroutine."""

from __future__ import annotations

import asyncio
import threading


class ConcurrencyLimits:
    """The first call of a key fixes that key's cap (`max_concurrency` of its row, at most the
    global cap)."""

    def __init__(self, global_cap: int):
        self.global_cap = global_cap
        self._global = threading.BoundedSemaphore(global_cap)
        self._per_key: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []  # coroutines waiting for a slot

    def for_key(self, key: str, cap: int | None) -> threading.BoundedSemaphore:
        with self._lock:
            if key not in self._per_key:
                self._per_key[key] = threading.BoundedSemaphore(min(cap or self.global_cap, self.global_cap))
            return self._per_key[key]

    def slot(self, key: str, cap: int | None) -> _Slot:
        return _Slot(self.for_key(key, cap), self._global, released=self._released)

    def aslot(self, key: str, cap: int | None) -> _AsyncSlot:
        """The slot of `slot`, for a coroutine (`async with`)."""
        return _AsyncSlot(self, (self.for_key(key, cap), self._global))

    def _released(self) -> None:
        """A slot was given back: wake the coroutines waiting for one (on their loops)."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for loop, future in waiting:
            loop.call_soon_threadsafe(_wake, future)


class _Slot:
    """Holds the per-model semaphore, then the global one (always in that order: no deadlock,
    and no global slot is held while waiting for a busy model)."""

    def __init__(self, *semaphores: threading.BoundedSemaphore, released=None):
        self._semaphores = semaphores
        self._released = released

    def __enter__(self) -> _Slot:
        for semaphore in self._semaphores:
            semaphore.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        for semaphore in reversed(self._semaphores):
            semaphore.release()
        if self._released is not None:
            self._released()


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _AsyncSlot:
    """`_Slot` for a coroutine: each semaphore taken without blocking, in the same order; while
    one is busy the coroutine waits on the loop until any slot of the caps is released, then
    tries again (a semaphore already held is kept: the per-model one, as `_Slot` holds it)."""

    def __init__(self, limits: ConcurrencyLimits, semaphores: tuple[threading.BoundedSemaphore, ...]):
        self._limits, self._semaphores = limits, semaphores

    async def __aenter__(self) -> _AsyncSlot:
        loop, held = asyncio.get_running_loop(), []
        try:
            for semaphore in self._semaphores:
                while True:
                    with self._limits._lock:
                        if semaphore.acquire(blocking=False):
                            break
                        future = loop.create_future()
                        self._limits._waiting.append((loop, future))
                    await future
                held.append(semaphore)
        except BaseException:  # cancelled while waiting: what it held is given back
            for semaphore in reversed(held):
                semaphore.release()
            self._limits._released()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back (what `async with` does on leaving; the call engine gives it back as
        soon as the reply is back, before it is saved, `daydream.call_process`)."""
        for semaphore in reversed(self._semaphores):
            semaphore.release()
        self._limits._released()
