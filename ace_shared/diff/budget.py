"""Counters shared by every piece of one job: the MAX_ALLOWED_DIFFS budget and progress.

Whoever runs the ranges (threads in one process, or Celery workers on many
hosts) reports, per part (a batch of ranges), how much that part has done so
far. Reports are idempotent: a batch redelivered after its worker died reports
its own figures again and the total does not count them twice. In-process the
counter is a locked dict; on the fleet it is a Redis hash plus a total kept by
one Lua script (``ace_workers``), so every runner sees the same numbers.
"""

from __future__ import annotations

import threading
from typing import Protocol


class PartCounter(Protocol):
    def record(self, part: str, value: int) -> int:
        """Raise ``part``'s figure to ``value`` (never lower it); return the total."""

    def total(self) -> int:
        """The sum over all parts."""


class LocalPartCounter:
    """A part counter for runners that share one process."""

    def __init__(self) -> None:
        self._parts: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def record(self, part: str, value: int) -> int:
        with self._lock:
            old = self._parts.get(part, 0)
            if value > old:
                self._parts[part] = value
                self._total += value - old
            return self._total

    def total(self) -> int:
        return self._total


class DiffBudget:
    """MAX_ALLOWED_DIFFS over a part counter: exhausted once the total reaches the limit."""

    def __init__(self, counter: PartCounter, limit: int) -> None:
        self.counter = counter
        self.limit = limit

    def record(self, part: str, found: int) -> int:
        return self.counter.record(part, found)

    def exhausted(self) -> bool:
        return self.limit > 0 and self.counter.total() >= self.limit


def local_budget(limit: int) -> DiffBudget:
    return DiffBudget(LocalPartCounter(), limit)
