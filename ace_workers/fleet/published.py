"""What the fleet publishes about each task in Redis, for whoever follows it from any host.

The task store is the record of every task; but a CLI on another host may not
share the workers' store, and polling a database to wait costs a query per
look. So the workers also publish each task's status, progress and outcome in
one small Redis hash (``ace:task:<id>``), and announce every change on a
pub/sub channel. A follower reads the hash, then blocks on the channel until
something changes: waiting costs nothing while nothing happens.

The submitter creates the hash before the task's message leaves, and the
worker that starts the task writes it again before recording the task in the
store. Updates only change a hash that exists; so a hash that vanished while
its task was unfinished means Redis lost its state (a restart without
persistence) and with it the task's messages. Outcomes are written whatever
happens, and kept for a day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ace_shared.tasks.status import FINISHED, PENDING, RUNNING
from ace_workers.fleet.redisclient import RedisClient

KEEP_SECONDS = 86400

LOST_MESSAGE = ("Task {task_id} was lost: the task broker (Redis) lost its queued work, "
                "probably restarted without persistence; submit the task again.")

# Change fields of a hash that exists; say so on its channel. Returns 1 if it existed.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', KEYS[2], ARGV[#ARGV])
return 1
"""

# Progress never goes back: batches of one task report from many processes at once.
_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
if ARGV[1] == 'set' then
  if tonumber(ARGV[2]) > done then redis.call('HSET', KEYS[1], 'done', ARGV[2]) end
elseif ARGV[1] == 'add' then
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'total', ARGV[2], 'done', 0)
end
redis.call('PUBLISH', KEYS[2], 'progress')
return 1
"""


# A Lua condition on ``status``, a task's published status (false if Redis does not know
# the task): true once nothing more should be written for it.
LUA_OVER = "not status or " + " or ".join(f"status == '{s}'" for s in FINISHED)


def task_key(task_id: str) -> str:
    return f"ace:task:{task_id}"


def channel(task_id: str) -> str:
    return f"ace:task-changed:{task_id}"


@dataclass(frozen=True)
class PublishedState:
    """A task as the fleet last published it."""

    status: str
    done: int
    total: int | None
    result: dict[str, Any] | None
    error: str | None
    note: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def create(client: RedisClient, task_id: str) -> None:
    """Publish a task about to be queued, or taken by a worker (unless published already)."""
    client.hsetnx(task_key(task_id), "status", PENDING)


def running(client: RedisClient, task_id: str) -> bool:
    """Mark a published task RUNNING; False if Redis no longer knows it."""
    return bool(client.eval(_UPDATE, 2, task_key(task_id), channel(task_id),
                            "status", RUNNING, "status"))


def progress(client: RedisClient, task_id: str, *, done: int | None = None, added: int | None = None,
             total: int | None = None) -> None:
    """Publish progress: a new figure (kept only if higher), an increment, or a new total."""
    if total is not None:
        client.eval(_PROGRESS, 2, task_key(task_id), channel(task_id), "total", total)
    if done is not None:
        client.eval(_PROGRESS, 2, task_key(task_id), channel(task_id), "set", done)
    if added:
        client.eval(_PROGRESS, 2, task_key(task_id), channel(task_id), "add", added)


def note(client: RedisClient, task_id: str, text: str | None) -> None:
    """Publish what a running task waits for ("waiting for a connection to n2: ..."), or
    that it waits no more (None)."""
    client.eval(_UPDATE, 2, task_key(task_id), channel(task_id), "note", text or "", "progress")


def outcome(client: RedisClient, task_id: str, status: str, result: dict[str, Any] | None,
            error: str | None) -> None:
    """Publish how a task ended (whether or not Redis still knew it), kept for a day."""
    key = task_key(task_id)
    fields = {"status": status, "result": json.dumps(result, default=str) if result else "",
              "error": error or ""}
    pipe = client.pipeline()
    pipe.hset(key, mapping=fields)
    pipe.expire(key, KEEP_SECONDS)
    pipe.publish(channel(task_id), "finished")
    pipe.execute()


def read(client: RedisClient, task_id: str) -> PublishedState | None:
    """The task's published state, or None if Redis does not know the task."""
    raw = {k.decode(): v.decode() for k, v in client.hgetall(task_key(task_id)).items()}
    if "status" not in raw:
        return None
    return PublishedState(
        status=raw["status"], done=int(raw.get("done") or 0),
        total=int(raw["total"]) if raw.get("total") else None,
        result=json.loads(raw["result"]) if raw.get("result") else None,
        error=raw.get("error") or None, note=raw.get("note") or None)


def known(client: RedisClient, task_ids: list[str]) -> list[bool]:
    """Whether Redis still knows each task."""
    pipe = client.pipeline()
    for task_id in task_ids:
        pipe.exists(task_key(task_id))
    return [bool(n) for n in pipe.execute()]
