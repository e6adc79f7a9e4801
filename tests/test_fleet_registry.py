"""What the fleet's processes tell each other: pool sizes, published tasks, submitted tasks.

The pool-size tests drive the Redis calls with fakeredis; the published state and
its followers run against the session's real Redis; the fleet tests show all of
them between real processes.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from fleet_helpers import RedisServer
from sqlalchemy.exc import IntegrityError

from ace_shared.config import Settings
from ace_shared.diff.workdir import WorkDir
from ace_shared.tasks.store import RUNNING, TaskStore, record_submission
from ace_workers.client import Finished, NoWorker, Progress, follow
from ace_workers.fleet import published, slots
from ace_workers.fleet.leases import (
    HELD,
    IGNORE,
    LEASE_SECONDS,
    RUN,
    SKIP,
    Leases,
    admit,
    done_in,
    lease_key,
    mark_done,
    mark_sent,
)
from ace_workers.fleet.mergewatch import MERGE_GRACE_SECONDS, ChordJob, MergeWatch
from ace_workers.fleet.slots import STALE_AFTER_SECONDS, announce, live_slots, withdraw
from ace_workers.fleet.sweep import Sweeper


def test_live_slots_add_up_every_worker_seen_lately() -> None:
    client = fakeredis.FakeRedis()
    assert live_slots(client) == 0
    announce(client, "w1@a", 4, now=1000.0)
    announce(client, "w2@b", 2, now=1001.0)
    assert live_slots(client, now=1002.0) == 6
    announce(client, "w1@a", 8, now=1003.0)  # restarted with a larger pool
    assert live_slots(client, now=1004.0) == 10


def test_a_worker_that_stopped_or_died_no_longer_counts() -> None:
    client = fakeredis.FakeRedis()
    announce(client, "stopped@a", 4, now=1000.0)
    announce(client, "killed@b", 2, now=1000.0)
    announce(client, "alive@c", 3, now=1000.0)
    withdraw(client, "stopped@a")
    later = 1000.0 + STALE_AFTER_SECONDS + 1
    announce(client, "alive@c", 3, now=later)
    assert live_slots(client, now=later) == 3
    assert set(client.hkeys("ace:worker_slots")) == {b"alive@c"}  # the dead entry is gone


def test_a_garbled_entry_is_dropped_not_fatal() -> None:
    client = fakeredis.FakeRedis()
    client.hset("ace:worker_slots", "odd@x", "not json")
    announce(client, "w1@a", 2)
    assert live_slots(client) == 2
    assert client.hkeys("ace:worker_slots") == [b"w1@a"]


def test_published_updates_change_only_a_task_redis_knows(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_server.url(5))
    client.flushdb()
    assert published.read(client, "td_1") is None
    published.create(client, "td_1")
    assert published.running(client, "td_1")
    published.progress(client, "td_1", total=10)
    published.progress(client, "td_1", done=6)
    published.progress(client, "td_1", done=4)  # a late report from another process
    state = published.read(client, "td_1")
    assert state is not None and (state.status, state.done, state.total) == ("RUNNING", 6, 10)
    # a task Redis forgot (a restart) is not brought back by an update
    assert not published.running(client, "td_2")
    published.progress(client, "td_2", done=3)
    assert published.read(client, "td_2") is None
    assert published.known(client, ["td_1", "td_2"]) == [True, False]
    # an outcome is published whatever happened, and kept for a day
    published.outcome(client, "td_2", "FAILED", None, "lost")
    state = published.read(client, "td_2")
    assert state is not None and state.finished and state.error == "lost"
    assert 0 < client.ttl(published.task_key("td_2")) <= published.KEEP_SECONDS


def test_a_follower_blocks_until_the_task_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Following costs a handful of Redis calls while nothing happens, not thousands."""
    server = RedisServer(tmp_path)  # its own, so that only the follower's calls count
    server.start()
    try:
        _follow_quietly(server.url(0))
    finally:
        server.stop()


def _follow_quietly(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    slots.announce(client, "w1@a", 2)  # a worker is there: no "no worker" event
    published.create(client, "td_f")
    settings = Settings(BROKER_URL=url)
    before = int(client.info("stats")["total_commands_processed"])
    threading.Timer(2.0, published.outcome, (client, "td_f", "COMPLETED", {"n": 1}, None)).start()
    started = time.monotonic()
    events = list(follow("td_f", settings))
    took = time.monotonic() - started
    calls = int(client.info("stats")["total_commands_processed"]) - before
    assert events == [Finished("COMPLETED", {"n": 1}, None)]
    assert 1.9 < took < 3.5
    assert calls < 40, calls


def test_a_follower_says_once_that_no_worker_takes_the_queue(redis_server) -> None:  # type: ignore[no-untyped-def]
    url = redis_server.url(7)
    client = redis.Redis.from_url(url)
    client.flushdb()
    published.create(client, "td_q")
    events = follow("td_q", Settings(BROKER_URL=url))
    started = time.monotonic()
    assert next(events) == NoWorker("td_q")
    assert 2.5 < time.monotonic() - started < 5
    published.running(client, "td_q")
    published.progress(client, "td_q", total=4)
    assert next(events) == Progress(0, 4)
    published.outcome(client, "td_q", "FAILED", None, "no luck")
    assert next(events) == Finished("FAILED", None, "no luck")


class _Heard:
    """A listener that notes the outcomes it hears of."""

    def __init__(self, heard: list[str]) -> None:
        self.heard = heard

    def running(self, task_id: str) -> None:
        pass

    def progress(self, task_id: str, **_: Any) -> None:
        pass

    def finished(self, task_id: str, status: str, result: Any, error: Any) -> None:
        self.heard.append(task_id)


def test_the_task_store_announces_only_the_first_outcome(tmp_path: Path) -> None:
    heard: list[str] = []
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}", listener=_Heard(heard))
    store.create("td_a", "table-diff", cluster_name="c", table_name="public.t",
                 requested_by="me")
    store.mark_running("td_a")
    store.set_progress("td_a", 3)
    assert heard == []
    assert store.complete("td_a", {"diff_file": "x"})
    assert not store.fail("td_a", "too late")  # first outcome wins, and is the one announced
    assert heard == ["td_a"]


def test_submitter_and_worker_record_one_row_in_either_order(tmp_path: Path) -> None:
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    row = {"task_type": "table-diff", "cluster_name": "c", "table_name": "public.t",
           "requested_by": "alice", "submitted_at": "2030-01-01T00:00:00+00:00"}
    assert record_submission(store, "td_b", {"nodes": "all"}, row)
    store.mark_running("td_b")
    assert not record_submission(store, "td_b", {"nodes": "all"}, row)  # the second writer
    rec = store.get("td_b")
    assert rec is not None and rec.status == RUNNING and rec.requested_by == "alice"
    assert rec.options == {"nodes": "all"}
    with pytest.raises(IntegrityError):  # an id used twice by mistake is still an error
        store.create("td_b", "table-diff", cluster_name="c", table_name="t", requested_by="x")


def _open_store(url: str, barrier: Any, failures: Any) -> None:
    barrier.wait()
    try:
        TaskStore(url)
    except Exception as exc:  # reported to the parent, which asserts there were none
        failures.put(repr(exc))


def test_processes_opening_a_new_task_store_at_once_all_succeed(tmp_path: Path) -> None:
    """A submitter and the worker that took its message may both be first on a new database."""
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'tasks{round_}.db'}"
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_store, args=(url, barrier, failures))
                 for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert all(p.exitcode == 0 for p in procs)
    assert failures.empty(), failures.get()


def test_the_sweep_fails_only_the_tasks_its_redis_knew_and_forgot(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_server.url(8))
    client.flushdb()
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    for task_id in ("td_mine", "td_other_fleet", "td_done"):
        store.create(task_id, "table-diff", cluster_name="c", table_name="t", requested_by="me")
    published.create(client, "td_mine")
    published.create(client, "td_done")
    sweeper = Sweeper()
    assert sweeper.sweep(client, store) == []
    store.complete("td_done", {})
    client.flushdb()  # Redis restarted with nothing on disk
    assert sweeper.sweep(client, store) == ["td_mine"]
    rec = store.get("td_mine")
    assert rec is not None and rec.status == "FAILED" and "lost its queued work" in rec.error
    other = store.get("td_other_fleet")
    assert other is not None and other.status == "PENDING"  # never known here: not judged


def test_importing_the_client_builds_no_celery_app_and_draws_nothing() -> None:
    code = ("import sys, ace_workers.client, ace_shared.tasks.store, ace_api.cli.fleet\n"
            "import ace_workers.app as a\n"
            "assert a.get_app.cache_info().currsize == 0, 'built'\n"
            "import ace_workers.client as c\n"
            "assert not hasattr(c, 'click') and 'ace_api.cli.progress' not in "
            "[m for m in vars(c).values() if isinstance(m, type(sys))]\n"
            "import ace_workers\n"
            "assert type(ace_workers.celery).__name__ == 'Celery'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_lease_is_held_by_one_process_and_leaves_a_done_mark(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_server.url(11))
    client.flushdb()
    published.create(client, "td_l")  # its job, running
    mine, theirs = Leases(), Leases()
    assert mine.take(client, "td_l.b000000")
    assert not theirs.take(client, "td_l.b000000")  # a copy elsewhere waits
    assert 0 < client.pttl(lease_key("td_l.b000000")) <= LEASE_SECONDS * 1000
    theirs.release(client, "td_l.b000000")  # not its lease: nothing changes
    assert client.exists(lease_key("td_l.b000000"))
    assert done_in(client, "td_l.b000000") is None
    mine.release(client, "td_l.b000000", done_group="g1")
    assert not client.exists(lease_key("td_l.b000000"))
    assert done_in(client, "td_l.b000000") == "g1"
    assert theirs.take(client, "td_l.b000000")  # free again (the caller checks the mark first)
    theirs.release(client, "td_l.b000000")  # else its renewer keeps it, past this Redis's life
    assert not client.exists(lease_key("td_l.b000000"))


class _HolderFinishesAfterFirstLook:
    """Real Redis, on which the lease holder finishes its task right after the copy's
    first look at the done mark: the moment a copy delivered again may arrive."""

    def __init__(self, client: Any, finish: Any) -> None:
        self._client, self._finish = client, finish

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def hget(self, key: str, field: str) -> Any:
        value = self._client.hget(key, field)
        if self._finish is not None:
            self._finish()
            self._finish = None
        return value


@pytest.mark.parametrize(("copy_group", "answer"), [("g1", IGNORE), ("g2", SKIP)])
def test_a_copy_that_arrives_as_its_holder_finishes_does_not_run_again(
        redis_server, copy_group: str, answer: str) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_server.url(11))
    client.flushdb()
    holder, copy = Leases(), Leases()
    task = "td_r.b000004"
    published.create(client, "td_r")
    assert admit(client, task, "g1", holder) == RUN
    assert admit(client, task, "g1", copy) == HELD  # while it runs, a copy waits
    racing = _HolderFinishesAfterFirstLook(
        client, lambda: holder.release(client, task, done_group="g1"))
    assert admit(racing, task, copy_group, copy) == answer
    assert not client.exists(lease_key(task))  # the copy gave the lease back
    assert done_in(client, task) == "g1"


def test_a_merge_is_sent_again_only_when_every_batch_is_long_done_and_no_merge_is_about(
        redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Real Redis, a real work folder; the plan lookup is given the chord directly."""
    client = redis.Redis.from_url(redis_server.url(9))
    client.flushdb()
    work = WorkDir.for_task(tmp_path, "td_w").create()
    job = ChordJob(str(work.path), (0, 4, 9), "ace.merge_diff", "td_w.merge", "ace.diff_failed")
    for first in job.firsts[:2]:
        work.batch_result_path(first).write_text("{}")
    sent: list[tuple[ChordJob, str]] = []

    def watch() -> MergeWatch:  # as on one more worker of the fleet
        return MergeWatch(lookup=lambda _out, task_id: job if task_id == "td_w" else None)

    def check(w: MergeWatch, later: float = 0) -> list[str]:
        return w.check(client, tmp_path, ["td_w", "td_other"], lambda *a: sent.append(a),
                       now=time.time() + later)

    one, two = watch(), watch()
    assert check(one, MERGE_GRACE_SECONDS + 5) == []  # a batch is not done yet
    work.batch_result_path(9).write_text("{}")
    assert check(one) == []  # done just now: the chord's own merge is on its way
    client.set(lease_key("td_w.merge"), "someone")
    assert check(one, MERGE_GRACE_SECONDS + 5) == []  # the merge runs
    client.delete(lease_key("td_w.merge"))
    assert check(one, MERGE_GRACE_SECONDS + 5) == ["td_w"]
    assert sent == [(job, "td_w")]
    assert check(two, MERGE_GRACE_SECONDS + 5) == []  # another worker: sent already this period
    client.delete("ace:merge-resent:td_w")
    mark_done(client, "td_w.merge")
    assert check(two, MERGE_GRACE_SECONDS + 5) == []  # the merge finished
    assert len(sent) == 1


def test_a_merge_the_broker_has_is_not_sent_again_however_long_it_waits(
        redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A merge queued behind other work: every batch long done, no lease, no done mark,
    but its message reached the broker (as the chord's own send notes it)."""
    client = redis.Redis.from_url(redis_server.url(9))
    client.flushdb()
    work = WorkDir.for_task(tmp_path, "td_q").create()
    job = ChordJob(str(work.path), (0,), "ace.merge_diff", "td_q.merge", "ace.diff_failed")
    work.batch_result_path(0).write_text("{}")
    mark_sent(client, "td_q.merge")
    sent: list[Any] = []
    watch = MergeWatch(lookup=lambda _out, task_id: job)
    assert watch.check(client, tmp_path, ["td_q"], lambda *a: sent.append(a),
                       now=time.time() + 10 * MERGE_GRACE_SECONDS) == []
    assert sent == []


def test_a_wait_said_from_a_jobs_own_thread_is_published(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A job's connections are opened on threads of its own (a repair checks every node at
    once): a wait for a connection said there reaches the job's followers, and does not
    fail the job for want of a task in that thread."""
    from ace_workers.fleet import runtime
    monkeypatch.setenv("ACE_BROKER_URL", redis_server.url(6))
    monkeypatch.setattr(runtime, "_runtime", None)  # this process's runtime, made anew
    client = redis.Redis.from_url(redis_server.url(6))
    client.flushdb()
    published.create(client, "tr_wait")
    runtime.current().current_job = "tr_wait"
    errors: list[BaseException] = []

    def on_a_pool_thread() -> None:
        try:
            runtime._say_waiting("waiting for a connection to n2")
        except BaseException as exc:
            errors.append(exc)
    thread = threading.Thread(target=on_a_pool_thread)
    thread.start()
    thread.join()
    assert errors == []
    assert client.hget(published.task_key("tr_wait"), "note") == b"waiting for a connection to n2"
