"""Who is running a task right now, so a message Redis hands out again is not run twice.

Redis gives a task's message to another worker when the first has not
acknowledged it within the visibility timeout. That timeout must be short for
a dead host's work to be taken up soon (see :mod:`ace_workers.app`), yet tasks
may run for hours. So a worker running a task holds a lease on it in Redis
(``ace:lease:<task id>``, a few seconds long) and a thread in its process
renews every lease it holds. A worker handed a task whose lease is held puts
the message back for later instead of running it; once the holder has died
its lease lapses and the next delivery runs the task.

A task that finished leaves a mark naming the group it finished in, so a late
copy of it changes nothing; a copy belonging to a chord launched again after
its planner died still answers that chord. The marks of one job share one
hash (``ace:done:<job id>``, a field per task, kept a day): a job of a
thousand batches keeps one key, not a thousand. A subtask of a job that has
finished (or that Redis no longer knows: restarted without persistence)
leaves no mark: no copy of it will run again (see
:class:`~ace_workers.fleet.counters.JobFinished`), and a mark would only outlive
its job in Redis.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

from ace_shared.tasks.ids import job_of
from ace_workers.fleet.published import LUA_OVER, task_key
from ace_workers.fleet.redisclient import RedisClient

LEASE_SECONDS = 20
RENEW_SECONDS = 5.0
DONE_KEEP_SECONDS = 86400

log = logging.getLogger(__name__)

# Extend a lease still ours; take it again if Redis lost it (a restart); else it is not ours.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""

# Drop a lease only if it is ours; mark the task done if asked: a field of its job's
# hash, unless it is a subtask (ARGV[6]) whose job has finished or is unknown (KEYS[3]).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '1' then return 1 end
if ARGV[6] == '1' then
  local status = redis.call('HGET', KEYS[3], 'status')
  if """ + LUA_OVER + """ then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


def lease_key(task_id: str) -> str:
    return f"ace:lease:{task_id}"


def done_key(task_id: str) -> str:
    """The hash holding the done marks of ``task_id``'s job."""
    return f"ace:done:{job_of(task_id)}"


def done_in(client: RedisClient, task_id: str) -> str | None:
    """The group a task finished in ("" outside any group), or None if it has not finished."""
    value = client.hget(done_key(task_id), task_id)
    return None if value is None else value.decode()


def mark_done(client: RedisClient, task_id: str, group: str = "") -> None:
    """Mark ``task_id`` finished in ``group`` (as a run's release does)."""
    pipe = client.pipeline()
    pipe.hset(done_key(task_id), task_id, group)
    pipe.expire(done_key(task_id), DONE_KEEP_SECONDS)
    pipe.execute()


SENT_PREFIX = "sent:"


def mark_sent(client: RedisClient, task_id: str) -> None:
    """Note in its job's hash that ``task_id``'s message reached the broker: from then on
    the broker holds it (queued, or taken by a worker and given back should it die)."""
    pipe = client.pipeline()
    pipe.hset(done_key(task_id), SENT_PREFIX + task_id, "1")
    pipe.expire(done_key(task_id), DONE_KEEP_SECONDS)
    pipe.execute()


def was_sent(client: RedisClient, task_id: str) -> bool:
    return bool(client.hexists(done_key(task_id), SENT_PREFIX + task_id))


class Leases:
    """The leases this process holds, renewed by one background thread."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._client: RedisClient | None = None

    def take(self, client: RedisClient, task_id: str) -> bool:
        """Take the lease on ``task_id``; False if another live worker holds it."""
        token = f"{os.getpid()}:{uuid.uuid4().hex}"
        if not client.set(lease_key(task_id), token, nx=True, px=LEASE_SECONDS * 1000):
            return False
        with self._lock:
            self._held[task_id] = token
            self._client = client
            self._ensure_thread()
        return True

    def release(self, client: RedisClient, task_id: str, *, done_group: str | None = None) -> None:
        """Give up the lease (if held); with ``done_group``, mark the task finished in it."""
        with self._lock:
            token = self._held.pop(task_id, "")
        if not token and done_group is None:
            return
        client.eval(_RELEASE, 3, lease_key(task_id), done_key(task_id),
                    task_key(job_of(task_id)), token,
                    "1" if done_group is not None else "0", done_group or "",
                    DONE_KEEP_SECONDS, task_id, "1" if "." in task_id else "0")

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._renew_forever, name="ace-leases",
                                         daemon=True)
        self._thread.start()

    def _renew_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(RENEW_SECONDS):
            with self._lock:
                held, client = dict(self._held), self._client
            if not held or client is None:  # the client comes with the first lease
                continue
            try:
                pipe = client.pipeline()
                for task_id, token in held.items():
                    pipe.eval(_RENEW, 1, lease_key(task_id), token, LEASE_SECONDS * 1000)
                for task_id, answer in zip(held, pipe.execute(), strict=True):
                    if not answer:
                        log.warning("task %s is held by another worker now", task_id)
            except Exception as exc:  # Redis away for a moment: try again at the next beat
                log.warning("could not renew this worker's task leases: %s", exc)


leases = Leases()

RUN, HELD, IGNORE, SKIP = "run", "held", "ignore", "skip"


def admit(client: RedisClient, task_id: str, group: str, holder: Leases = leases) -> str:
    """Whether this copy of a task may run: :data:`RUN` with its lease taken; :data:`HELD`
    while another live worker holds it; :data:`IGNORE` if it finished in this ``group``
    (a late copy of counted work); :data:`SKIP` if it finished in another (its chord was
    launched again).

    The done mark is read again after the lease is taken: the holder may finish
    between the first look and the take, and its release and mark are one step,
    so a lease found free means its mark is visible by then.
    """
    finished_in = done_in(client, task_id)
    if finished_in is None:
        if not holder.take(client, task_id):
            return HELD
        finished_in = done_in(client, task_id)
        if finished_in is None:
            return RUN
        holder.release(client, task_id)
    return IGNORE if finished_in == group else SKIP
