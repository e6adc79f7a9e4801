"""Redis-backed part counters: the fleet's shared MAX_ALLOWED_DIFFS budget and progress.

Each batch reports its own running figure; one Lua script raises that part's
value (never lowers it) and moves the total by the difference, atomically. A
batch redelivered after its worker died re-reports the same figures and the
total does not change, so neither the budget nor progress counts work twice.

A counter of a job's may be guarded by the job's published state
(:mod:`ace_workers.fleet.published`): once the job has finished, or Redis no longer
knows it (restarted without persistence, so the job is failed as lost), a
report writes nothing and raises :class:`JobFinished`, which ends the batch
that made it. Nothing of a finished job is written back into Redis.
"""

from __future__ import annotations

from functools import lru_cache

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from ace_shared.tasks.status import JobFinished
from ace_workers.fleet.published import LUA_OVER
from ace_workers.fleet.redisclient import RedisClient

__all__ = ["DEFAULT_BROKER", "JobFinished", "RedisPartCounter", "redis_client"]

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

_RECORD = """
if #KEYS > 2 then
  local status = redis.call('HGET', KEYS[3], 'status')
  if """ + LUA_OVER + """ then return -1 end
end
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[2])
if new > old then
  redis.call('HSET', KEYS[1], ARGV[1], new)
  redis.call('INCRBY', KEYS[2], new - old)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return tonumber(redis.call('GET', KEYS[2]) or '0')
"""


@lru_cache(maxsize=8)
def redis_client(url: str, patience_seconds: float = 10.0) -> redis.Redis:
    """A client that rides out a Redis restart of up to ``patience_seconds``.

    Workers wait that long (as the result backend does), so a restarting Redis
    does not fail the batch that was talking to it; a front door, which has a
    user waiting, gives up sooner.
    """
    tries = max(1, int(patience_seconds / 0.5))
    return redis.Redis.from_url(url, socket_keepalive=True, health_check_interval=30,
                                retry=Retry(ConstantBackoff(0.5), tries),
                                retry_on_error=[redis.ConnectionError, redis.TimeoutError])


class RedisPartCounter:
    """A :class:`~ace_shared.diff.budget.PartCounter` shared through Redis."""

    def __init__(self, client: RedisClient, name: str, ttl_seconds: int = 86400,
                 guard: str | None = None) -> None:
        """``guard``: the published state's key of the job this counter belongs to."""
        self._redis = client
        self._parts_key = f"ace:{name}:parts"
        self._total_key = f"ace:{name}:total"
        self._ttl = ttl_seconds
        self._guard = guard
        self._script = client.register_script(_RECORD)

    def record(self, part: str, value: int) -> int:
        keys = [self._parts_key, self._total_key] + ([self._guard] if self._guard else [])
        total = int(self._script(keys=keys, args=[part, value, self._ttl]))
        if total < 0:
            raise JobFinished(self._guard)
        return total

    def total(self) -> int:
        return int(self._redis.get(self._total_key) or 0)

    def clear(self) -> None:
        self._redis.delete(self._parts_key, self._total_key)
