"""Where a scan's CPU goes: this thread's CPU seconds (time.thread_time) per stage of a cluster's scan.

A cluster is scanned in one thread from its read to its report, so a per-thread ledger needs no locks and counts
no other thread's work; what a helper thread does for the scan (the reader lists namespaces in one) is charged to
it by `charge`. A stage inside another is charged to the inner one only, so the stages of a scan add up to the CPU
spent in them. `scan_cluster` logs its cluster's stages with the cluster's outcome; bench/fleet.py reads the ledger
per queue message to model a deployment from what each stage costs.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")


class StageLedger:
    """CPU seconds per stage, per thread."""

    def __init__(self, clock: Callable[[], float] = time.thread_time) -> None:
        self._local = threading.local()
        self._clock = clock

    def _books(self) -> threading.local:
        books = self._local
        if not hasattr(books, "totals"):
            books.totals, books.open, books.mark, books.charged = {}, [], 0.0, 0.0
        return books

    def _charge(self, books: threading.local, now: float) -> None:
        if books.open:
            stage = books.open[-1]
            books.totals[stage] = books.totals.get(stage, 0.0) + now - books.mark
        books.mark = now

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        books = self._books()
        self._charge(books, self._clock())
        books.open.append(name)
        try:
            yield
        finally:
            self._charge(books, self._clock())
            books.open.pop()

    def charge(self, seconds: float) -> None:
        """CPU that other threads spent for this one's open stage (the reader lists namespaces in a thread of its
        own), charged to that stage."""
        books = self._books()
        books.charged += seconds
        if books.open:
            stage = books.open[-1]
            books.totals[stage] = books.totals.get(stage, 0.0) + seconds

    def charged(self) -> float:
        """CPU seconds other threads have spent for this one so far (time.thread_time does not count them)."""
        return self._books().charged

    def each(self, name: str, items: Iterable[Item]) -> Iterator[Item]:
        """The items of a lazy iterable, the work of making each one charged to `name` (a generator's work happens
        where its consumer asks for the next item)."""
        iterator = iter(items)
        while True:
            with self.stage(name):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def snapshot(self) -> dict[str, float]:
        return dict(self._books().totals)

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """This thread's CPU seconds per stage since `snapshot()` returned `before`."""
        return {stage: round(total - before.get(stage, 0.0), 6) for stage, total in self.snapshot().items()
                if total > before.get(stage, 0.0)}

    def take(self) -> dict[str, float]:
        """This thread's CPU seconds per stage so far, and a fresh start."""
        books = self._books()
        totals, books.totals = books.totals, {}
        return totals


_END = object()
CPU = StageLedger()
