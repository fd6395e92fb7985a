"""The cyclic garbage collector paused while a cluster is scanned.

Reading a cluster, evaluating it and building its findings make tens of thousands of small objects that live as
long as the scan (namespaces, labels, policy specs, results) and no reference cycles: reference counting frees them
all when the scan returns. Running, the collector walks each of them on its first passes; paused for the whole
scan (handler/run/scan.py), it never sees them. For the benchmark cluster of 10,000 namespaces that was a third of
the read's CPU: the first pass after a pause that ended with the read walked the whole snapshot and every result
(bench/scan_one_cluster.py, docs/benchmarks.md).

The garbage that does form cycles (a failed read's traceback, botocore's clients) waits for the collector: about
300 objects a scanned cluster, 1,000 a cluster that could not be read (measured in the sandbox). Clusters scanned
in parallel threads keep it paused between them, so a pause that ends while others go on collects the young
generation when the collector has been paused for MAX_PAUSE_SECONDS: what waits is bounded by a few clusters'
worth, and what is walked then is what the scans in progress hold, at most every MAX_PAUSE_SECONDS.
"""
from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator

MAX_PAUSE_SECONDS = 10.0


class _Pauses:
    """Pauses that nest and overlap (clusters are scanned in parallel threads): the collector runs again when the
    last one ends, if it was running when the first began."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._count = 0
        self._resume = False
        self._since = 0.0  # when the collector last ran or was paused

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._count == 0:
                self._resume = gc.isenabled()
                self._since = self._clock()
                gc.disable()
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                overdue = self._resume and self._count and self._clock() - self._since >= MAX_PAUSE_SECONDS
                if overdue:
                    self._since = self._clock()
                if self._count == 0 and self._resume:
                    gc.enable()
            if overdue:  # off for long while other scans go on: what was made since is all in generation 0
                gc.collect(0)


paused = _Pauses()
