"""The MAX_ALLOWED_DIFFS budget shared by every piece of one diff.

Whoever runs the ranges (threads in one process, or Celery workers on many
hosts) adds what it found to one counter; once the total reaches the limit,
every runner sees it and stops before its next range. In-process it is a
locked integer; on the fleet it is a Redis counter (``ace_workers``).
"""

from __future__ import annotations

import threading
from typing import Protocol


class DiffBudget(Protocol):
    limit: int

    def add(self, found: int) -> int:
        """Record ``found`` more differing rows; return the new total."""

    def total(self) -> int:
        """Rows found so far by every runner."""

    def exhausted(self) -> bool:
        """True once the total has reached the limit."""


class LocalBudget:
    """A budget for runners that share one process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._total = 0
        self._lock = threading.Lock()

    def add(self, found: int) -> int:
        with self._lock:
            self._total += found
            return self._total

    def total(self) -> int:
        return self._total

    def exhausted(self) -> bool:
        return self.limit > 0 and self._total >= self.limit


class RedisBudget:
    """A budget shared through one Redis key, for runners on many hosts."""

    def __init__(self, client: object, key: str, limit: int, ttl_seconds: int = 86400) -> None:
        self.limit = limit
        self._redis = client
        self._key = key
        self._ttl = ttl_seconds

    def add(self, found: int) -> int:
        pipe = self._redis.pipeline()  # type: ignore[attr-defined]
        pipe.incrby(self._key, found)
        pipe.expire(self._key, self._ttl)
        total, _ = pipe.execute()
        return int(total)

    def total(self) -> int:
        value = self._redis.get(self._key)  # type: ignore[attr-defined]
        return int(value or 0)

    def exhausted(self) -> bool:
        return self.limit > 0 and self.total() >= self.limit

    def reset(self) -> None:
        self._redis.delete(self._key)  # type: ignore[attr-defined]
