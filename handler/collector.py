"""The cyclic garbage collector paused while a scan makes its snapshot and its results.

Reading a cluster and evaluating it make tens of thousands of small objects that live as long as the scan
(namespaces, labels, policy specs, results) and no reference cycles: reference counting frees them all, while each
pass of the cyclic collector walks every one made so far. Paused, a 10,000-namespace cluster's read took a third
less CPU and its evaluation a sixth less (bench/scan_one_cluster.py, docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _Pauses:
    """Pauses that nest and overlap (clusters are read in parallel threads): the collector runs again when the last
    one ends, if it was running when the first began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._resume = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._count == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0 and self._resume:
                    gc.enable()


paused = _Pauses()
