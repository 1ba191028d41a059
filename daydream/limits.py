"""Concurrency caps on model calls (SPEC §7): a global cap on calls in flight plus one cap per
concurrency key (model string, endpoint and key variable: one account), shared by every thread
of the run (`Run.limits`: one per Runtime). A slot is held for one attempt only, never while
sleeping between attempts, so a rate-limited model does not starve the others."""

from __future__ import annotations

import threading


class ConcurrencyLimits:
    """The first call of a key fixes that key's cap (`max_concurrency` of its row, at most the
    global cap)."""

    def __init__(self, global_cap: int):
        self.global_cap = global_cap
        self._global = threading.BoundedSemaphore(global_cap)
        self._per_key: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def for_key(self, key: str, cap: int | None) -> threading.BoundedSemaphore:
        with self._lock:
            if key not in self._per_key:
                self._per_key[key] = threading.BoundedSemaphore(min(cap or self.global_cap, self.global_cap))
            return self._per_key[key]

    def slot(self, key: str, cap: int | None) -> _Slot:
        return _Slot(self.for_key(key, cap), self._global)


class _Slot:
    """Holds the per-model semaphore, then the global one (always in that order: no deadlock,
    and no global slot is held while waiting for a busy model)."""

    def __init__(self, *semaphores: threading.BoundedSemaphore):
        self._semaphores = semaphores

    def __enter__(self) -> _Slot:
        for semaphore in self._semaphores:
            semaphore.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        for semaphore in reversed(self._semaphores):
            semaphore.release()
