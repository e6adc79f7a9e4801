"""How many worker processes the fleet has right now, for automatic batching.

A table-diff left to choose its own batch size cuts its ranges into a few tasks
per worker process (see :func:`ace_shared.diff.ranges.tapered_sizes`), so it must
know how many there are. Asking the workers (``celery inspect``) costs a
broadcast and a wait on every diff; instead each worker writes its pool size
and the time into one Redis hash when it starts and every few seconds after,
and removes it when it stops. A worker killed outright stops refreshing its
entry, and readers drop entries older than a few heartbeats.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import bootsteps

from ace_workers.fleet.counters import redis_client
from ace_workers.fleet.redisclient import RedisClient

SLOTS_KEY = "ace:worker_slots"
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS

log = logging.getLogger(__name__)


def announce(client: RedisClient, hostname: str, slots: int, now: float | None = None) -> None:
    """Record that worker ``hostname`` runs ``slots`` processes, as of ``now``."""
    seen = time.time() if now is None else now
    client.hset(SLOTS_KEY, hostname, json.dumps({"slots": slots, "seen": seen}))


def withdraw(client: RedisClient, hostname: str) -> None:
    client.hdel(SLOTS_KEY, hostname)


def live_slots(client: RedisClient, now: float | None = None) -> int:
    """Worker processes of every worker seen lately; stale entries are removed."""
    current = time.time() if now is None else now
    total = 0
    for name, raw in client.hgetall(SLOTS_KEY).items():
        try:
            entry = json.loads(raw)
            slots, seen = int(entry["slots"]), float(entry["seen"])
        except (ValueError, KeyError, TypeError):
            slots, seen = 0, 0.0
        if current - seen > STALE_AFTER_SECONDS:
            client.hdel(SLOTS_KEY, name)
            continue
        total += max(0, slots)
    return total


class SlotHeartbeat(bootsteps.StartStopStep):
    """Worker bootstep: keep this worker's entry in :data:`SLOTS_KEY` fresh."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._timer_entry: Any = None

    def _beat(self, worker: Any) -> None:
        try:
            slots = int(getattr(worker.pool, "num_processes", 0) or worker.concurrency or 0)
            announce(redis_client(worker.app.conf.broker_url, 1.0), worker.hostname, slots)
        except Exception as exc:  # a Redis outage must not stop the worker; diffs fall back
            log.warning("could not record this worker's pool size in Redis: %s", exc)

    def start(self, worker: Any) -> None:
        self._beat(worker)
        self._timer_entry = worker.timer.call_repeatedly(HEARTBEAT_SECONDS, self._beat,
                                                         (worker,), priority=10)

    def stop(self, worker: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        try:
            withdraw(redis_client(worker.app.conf.broker_url, 1.0), worker.hostname)
        except Exception as exc:
            log.warning("could not remove this worker's pool size from Redis: %s", exc)
