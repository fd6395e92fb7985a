"""What the benchmarks share: CPU pinning, and the verdict each ends with (its floors, met or not, as the exit
status)."""
from __future__ import annotations

import os

from collections.abc import Iterable


def verdict(violations: Iterable[str]) -> int:
    """Prints each broken floor once (or that all were met); returns the command's exit status."""
    broken = list(dict.fromkeys(violations))
    if broken:
        print("FLOORS VIOLATED:")
        for violation in broken:
            print(f"  - {violation}")
        return 1
    print("all floors met")
    return 0


def pin_to_cpu(cpu_index: int) -> None:
    """Pins this process to one CPU (by index into those it may use) when there are two or more, so that a
    benchmark's server side and client side do not take each other's core."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[cpu_index]})
    except (AttributeError, OSError):
        pass
