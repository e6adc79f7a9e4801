"""A fleet that keeps going when a host dies, at the default settings.

Each test holds the work where it wants it (a table locked on a node makes
every query on it wait), kills a whole worker (main process and pool, as when
its host dies) or lets a task outlast Redis's visibility timeout, then checks
what a user would see: the same diff file as in-process, a final status, no
work done twice. Nothing here lowers a timeout.

A lost worker's messages come back only after the visibility timeout, so the
tests that kill one each get a two-worker fleet and table of their own, and
the module kills them all at its start (:func:`lost_jobs`): their minutes of
waiting pass together, and each test then checks its own job's outcome.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from fleet_helpers import Fleet, own_fleet, scenario_of, started_on_own_fleets, wait_for
from node_sql import run_sql

from ace_shared.tasks.store import COMPLETED, FAILED, RUNNING, TaskStore

TABLE = "hl_items"
ROWS = 20000


def _make_items(pg_cluster, table: str) -> str:  # type: ignore[no-untyped-def]
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), f"DROP TABLE IF EXISTS {table}",
              f"CREATE TABLE {table} (id int PRIMARY KEY, label text, amount numeric(10,2))",
              f"INSERT INTO {table} SELECT g, 'item ' || g, g * 0.25 "
              f"FROM generate_series(1, {ROWS}) g", f"ANALYZE {table}")
    run_sql(pg_cluster.node_dsn(1), f"UPDATE {table} SET label = 'changed' WHERE id % 3001 = 0",
          f"DELETE FROM {table} WHERE id IN (5, 19999)")
    run_sql(pg_cluster.node_dsn(2), f"INSERT INTO {table} VALUES (0, 'below', 1), ({ROWS + 9}, 'above', 2)")
    return f"public.{table}"


@pytest.fixture(scope="module")
def items(pg_cluster):  # type: ignore[no-untyped-def]
    return _make_items(pg_cluster, TABLE)


@contextmanager
def locked(pg_cluster, nodes: tuple[int, ...], table: str = TABLE) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Hold ``table`` locked on these nodes: every query on it there waits."""
    conns = []
    try:
        for node in nodes:
            conn = psycopg2.connect(pg_cluster.node_dsn(node))
            conn.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            conns.append(conn)
        yield
    finally:
        for conn in conns:
            conn.rollback()
            conn.close()


def _store(fl: Fleet) -> TaskStore:
    return TaskStore(fl.env["ACE_DATABASE_URL"])


def _wait_done(fl: Fleet, task_id: str, timeout: float):  # type: ignore[no-untyped-def]
    store = _store(fl)
    wait_for(lambda: store.get(task_id).status in (COMPLETED, FAILED), timeout,
             f"task {task_id} to finish", interval=0.2)
    return store.get(task_id)


def _diff_file(stdout: str) -> Path:
    match = re.search(r"(?:Diffs|Diff summary) written to (\S+)", stdout)
    assert match, stdout
    return Path(match.group(1))


def _reference(fl: Fleet, *args: str) -> dict:  # type: ignore[type-arg]
    env = {k: v for k, v in fl.env.items() if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}
    res = subprocess.run([sys.executable, "-m", "ace_api", *args],
                         env={**env, "ACE_NO_PROGRESS": "1"}, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode in (0, 1), res.stderr
    return json.loads(_diff_file(res.stdout).read_text())


def _submit(fl: Fleet, *args: str) -> str:
    res = fl.ace(*args, "--no-wait")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def _runner_of(fl: Fleet, marker: str, offsets: dict[str, int]) -> str | None:
    for name in fl.names:
        if marker in fl.log(name)[offsets[name]:]:
            return name
    return None


def _succeeded(fl: Fleet, task_id: str) -> list[str]:
    pattern = re.compile(rf"\[({re.escape(task_id)}(?:\.\w+)?)\] succeeded")
    return [m.group(1) for n in fl.names for m in pattern.finditer(fl.log(n))]


def _handed_out_again(fl: Fleet, task_id: str) -> bool:
    """Whether Redis has put a message of this job, unacknowledged too long, back on the queue."""
    client = redis.Redis.from_url(fl.env["ACE_BROKER_URL"])
    try:
        queued = [json.loads(m)["headers"] for m in client.lrange("ace", 0, -1)]
    finally:
        client.close()
    return any(h.get("redelivered") and str(h.get("id", "")).startswith(f"{task_id}.")
               for h in queued)


def test_a_task_longer_than_the_visibility_timeout_runs_once(fleet, items, pg_cluster):
    """Redis hands out again a message unacknowledged for 45 s; its lease keeps it from running twice."""
    reference = _reference(fleet, "table-diff", "testclus", items, "--block-rows=1000")
    with locked(pg_cluster, (1,)):
        task_id = _submit(fleet, "table-diff", "testclus", items, "--block-rows=1000")
        wait_for(lambda: _store(fleet).get(task_id).status == RUNNING, 60, "the diff to start")
        held = time.monotonic()
        # the running batches outlast the visibility timeout: Redis queues them again
        wait_for(lambda: _handed_out_again(fleet, task_id), 120,
                 "Redis to hand out a running batch again", interval=0.5)
        assert time.monotonic() - held > 30  # not before its time
        assert _store(fleet).get(task_id).status == RUNNING
    rec = _wait_done(fleet, task_id, 120)
    assert rec.status == COMPLETED, rec.error
    doc = json.loads(Path(rec.result["diff_file"]).read_text())
    assert doc["diffs"] == reference["diffs"]
    ran = _succeeded(fleet, task_id)
    assert len(ran) == len(set(ran)), sorted(ran)  # no batch ran twice


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Lost:
    """A job on a fleet of its own, one of whose workers was killed holding part of it."""

    fleet: Fleet
    task_id: str
    victim: str
    killed: datetime  # when it was killed (UTC)
    facts: dict[str, Any] = field(default_factory=dict)


def _kill_runner(fl: Fleet, marker: str, offsets: dict[str, int], pause: float) -> str:
    """Kill the worker whose log shows ``marker`` (after ``offsets``); return its name."""
    wait_for(lambda: _runner_of(fl, marker, offsets) is not None, 60, f"a worker to log {marker}")
    victim = _runner_of(fl, marker, offsets)
    assert victim is not None
    time.sleep(pause)
    fl.kill(victim)
    return victim


def _lose_the_planner(pg_cluster, fl: Fleet) -> Lost:  # type: ignore[no-untyped-def]
    table = _make_items(pg_cluster, "hl_plan")
    reference = _reference(fl, "table-diff", "testclus", table, "--block-rows=1000")
    offsets = {n: len(fl.log(n)) for n in fl.names}
    with locked(pg_cluster, (0, 1, 2), "hl_plan"):  # planning reads the table on every node: it waits
        task_id = _submit(fl, "table-diff", "testclus", table, "--block-rows=1000")
        victim = _kill_runner(fl, f"ace.table_diff[{task_id}] received", offsets, 0.5)
    return Lost(fl, task_id, victim, _now(), {"reference": reference})


def _lose_diff_batches(pg_cluster, fl: Fleet) -> Lost:  # type: ignore[no-untyped-def]
    table = _make_items(pg_cluster, "hl_diff")
    reference = _reference(fl, "table-diff", "testclus", table, "--block-rows=1000")
    offsets = {n: len(fl.log(n)) for n in fl.names}
    # every running batch waits on n2; planning, which samples the largest node, does not
    with locked(pg_cluster, (1,), "hl_diff"):
        task_id = _submit(fl, "table-diff", "testclus", table, "--block-rows=1000")
        victim = _kill_runner(fl, f"ace.diff_ranges[{task_id}.", offsets, 0.5)
    return Lost(fl, task_id, victim, _now(), {"reference": reference})


def _lose_a_rerun_batch(pg_cluster, fl: Fleet) -> Lost:  # type: ignore[no-untyped-def]
    table = _make_items(pg_cluster, "hl_rerun")
    diff = fl.ace("table-diff", "testclus", table, "--block-rows=1000")
    assert diff.returncode == 1, diff.stderr
    diff_file = str(_diff_file(diff.stdout))
    offsets = {n: len(fl.log(n)) for n in fl.names}
    with locked(pg_cluster, (1,), "hl_rerun"):
        task_id = _submit(fl, "table-rerun", "testclus", table, f"--diff-file={diff_file}")
        victim = _kill_runner(fl, f"ace.rerun_batch[{task_id}.", offsets, 0.5)
    return Lost(fl, task_id, victim, _now())


def _lose_a_repair(pg_cluster, fl: Fleet) -> Lost:  # type: ignore[no-untyped-def]
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS hl_rep",
              "CREATE TABLE hl_rep (id int PRIMARY KEY, v text)",
              "INSERT INTO hl_rep SELECT g, 'v' || g FROM generate_series(1, 2000) g")
    run_sql(pg_cluster.node_dsn(1), "DELETE FROM hl_rep WHERE id % 100 = 0")
    run_sql(pg_cluster.node_dsn(2), "UPDATE hl_rep SET v = 'x' WHERE id % 250 = 0")
    diff = fl.ace("table-diff", "testclus", "public.hl_rep")
    assert diff.returncode == 1, diff.stderr
    diff_file = str(_diff_file(diff.stdout))
    offsets = {n: len(fl.log(n)) for n in fl.names}
    with locked(pg_cluster, (2,), table="hl_rep"):  # n2 may be repaired; n3 waits
        task_id = _submit(fl, "table-repair", "testclus", "public.hl_rep",
                          f"--diff-file={diff_file}", "--source-of-truth=n1")
        victim = _kill_runner(fl, f"ace.table_repair[{task_id}] received", offsets, 1)
    return Lost(fl, task_id, victim, _now())


# each test that kills a worker, and how it puts its job in that state
LOSSES: dict[str, Callable[[Any, Fleet], Lost]] = {
    "test_sigkill_of_a_worker_mid_diff_still_yields_the_identical_file": _lose_diff_batches,
    "test_a_worker_lost_while_planning_leaves_the_plan_to_another": _lose_the_planner,
    "test_a_worker_lost_mid_rerun_leaves_its_batches_to_another": _lose_a_rerun_batch,
    "test_a_repair_lost_with_its_worker_ends_on_its_own": _lose_a_repair,
}


@pytest.fixture(scope="module", autouse=True)
def lost_jobs(request: pytest.FixtureRequest, pg_cluster: Any,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lost | Exception]]:
    """Each selected killing test's job, its worker killed, on a fleet of its own.

    Done before the first test, so that the visibility timeouts the jobs wait for
    pass while the module's other tests run; what went wrong in one is raised by
    its own test.
    """
    with started_on_own_fleets(request, pg_cluster, tmp_path_factory, LOSSES, "hostloss",
                               ("h1", "h2")) as jobs:
        yield jobs



def test_a_worker_lost_while_planning_leaves_the_plan_to_another(lost_jobs, request):
    lost = scenario_of(lost_jobs, request)
    rec = _wait_done(lost.fleet, lost.task_id, 150)
    assert rec.status == COMPLETED, rec.error
    finished = rec.finished_at
    took = (finished if finished.tzinfo else finished.replace(tzinfo=timezone.utc)) - lost.killed
    assert took.total_seconds() < 90  # about a minute, plus the work
    doc = json.loads(Path(rec.result["diff_file"]).read_text())
    assert doc["diffs"] == lost.facts["reference"]["diffs"]


def test_sigkill_of_a_worker_mid_diff_still_yields_the_identical_file(lost_jobs, request):
    lost = scenario_of(lost_jobs, request)
    rec = _wait_done(lost.fleet, lost.task_id, 150)
    survivor = next(n for n in lost.fleet.names if n != lost.victim)
    assert rec.status == COMPLETED, (rec.error, lost.fleet.log(survivor)[-3000:])
    doc = json.loads(Path(rec.result["diff_file"]).read_text())
    reference = lost.facts["reference"]
    assert doc["diffs"] == reference["diffs"]
    assert doc["summary"]["ranges_checked"] == reference["summary"]["ranges_total"]


def test_a_worker_lost_mid_rerun_leaves_its_batches_to_another(lost_jobs, request):
    lost = scenario_of(lost_jobs, request)
    rec = _wait_done(lost.fleet, lost.task_id, 150)
    assert rec.status == COMPLETED, rec.error
    summary = rec.result["summary"]
    assert summary["remaining"] == summary["previous_diff_rows"] > 0  # nothing was repaired


def test_a_repair_lost_with_its_worker_ends_on_its_own(lost_jobs, request):
    lost = scenario_of(lost_jobs, request)
    rec = _wait_done(lost.fleet, lost.task_id, 150)
    assert rec.status in (COMPLETED, FAILED)
    if rec.status == COMPLETED:  # run again from its diff file: every node repaired
        again = lost.fleet.ace("table-diff", "testclus", "public.hl_rep")
        assert again.returncode == 0, again.stdout


def test_lost_broker_state_fails_the_job_and_the_waiting_cli(items, pg_cluster, tmp_path):
    # a Redis and workers of its own: restarting the session's Redis would disturb the
    # workers every later test shares
    with own_fleet(tmp_path, ("w1", "w2"), pg_cluster=pg_cluster) as fleet:
        _lose_broker_state(fleet, items, pg_cluster)


def _lose_broker_state(fleet: Fleet, items: str, pg_cluster: Any) -> None:
    redis_server = fleet.redis
    assert redis_server is not None
    with locked(pg_cluster, (1,)):
        cli = subprocess.Popen(
            [sys.executable, "-m", "ace_api", "table-diff", "testclus", items,
             "--block-rows=1000"], env={**fleet.env, "ACE_NO_PROGRESS": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = _store(fleet)

        def running() -> bool:
            rows = [r for r in store.recent(5) if r.status == RUNNING]
            return bool(rows)
        wait_for(running, 60, "the diff to run")
        task_id = next(r.task_id for r in store.recent(5) if r.status == RUNNING)
        redis_server.restart()  # keeps nothing on disk, like ACE's own Redis settings
        restarted = time.monotonic()
        try:
            out, err = cli.communicate(timeout=60)
        finally:
            cli.kill()
    assert time.monotonic() - restarted < 60
    assert cli.returncode == 2, out + err
    # the workers ride out the restart; then the sweep (or the CLI) finds the job forgotten
    assert "lost its queued work" in err and "submit the task again" in err, err
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err
    rec = _wait_done(fleet, task_id, 30)
    assert rec.status == FAILED and "lost its queued work" in rec.error
