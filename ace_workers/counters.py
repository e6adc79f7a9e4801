"""Redis-backed part counters: the fleet's shared MAX_ALLOWED_DIFFS budget and progress.

Each batch reports its own running figure; one Lua script raises that part's
value (never lowers it) and moves the total by the difference, atomically. A
batch redelivered after its worker died re-reports the same figures and the
total does not change, so neither the budget nor progress counts work twice.
"""

from __future__ import annotations

from functools import lru_cache

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from ace_workers.redisclient import RedisClient

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

_RECORD = """
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

    def __init__(self, client: RedisClient, name: str, ttl_seconds: int = 86400) -> None:
        self._redis = client
        self._parts_key = f"ace:{name}:parts"
        self._total_key = f"ace:{name}:total"
        self._ttl = ttl_seconds
        self._script = client.register_script(_RECORD)

    def record(self, part: str, value: int) -> int:
        return int(self._script(keys=[self._parts_key, self._total_key],
                                args=[part, value, self._ttl]))

    def total(self) -> int:
        return int(self._redis.get(self._total_key) or 0)

    def clear(self) -> None:
        self._redis.delete(self._parts_key, self._total_key)
