"""The verdict every benchmark ends with: its floors, met or not, and the exit status that says so."""
from __future__ import annotations

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
