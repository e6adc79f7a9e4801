"""mtree build and table-diff shared by the workers of a fleet, and run in steps in-process.

A build's batches of leaves may run anywhere, twice, or with writes in between,
and the tree must still tell exactly what a full table-diff tells; a tree
whose build did not finish, or lost its tracking meanwhile, is refused. On a
real two-worker fleet a build makes the same tree as in-process, a tree's
table-diff the same diff file, and a worker killed mid-build or mid-diff
leaves its part to the other.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, execute, on_every_node, query, run_ace
from fleet_helpers import Fleet, own_fleet, scenario_of, started_on_own_fleets, wait_for

from ace_shared.config import load_settings
from ace_shared.errors import TableError
from ace_shared.mtree.buildjob import finish_build, hash_batch, plan_build
from ace_shared.mtree.objects import tree_key
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job, table_shape
from ace_shared.nodes.ident import TableName
from ace_shared.tasks.store import COMPLETED, TaskStore

ROWS = 20000  # 201 leaves at the default 100 rows: 13 ranges of 16 leaves


def _table(pg_cluster: Any, name: str) -> str:
    on_every_node(pg_cluster, [
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id int PRIMARY KEY, v text, f float8, at timestamptz)",
        f"INSERT INTO {name} SELECT g * 10, 'v' || g, g / 7.0, "
        f"'2026-01-01 00:00+00'::timestamptz + g * interval '1 minute' "
        f"FROM generate_series(1, {ROWS}) g",
    ])
    assert run_ace("mtree", "init", CLUSTER).code == 0
    return f"public.{name}"


def _tree(pg_cluster: Any, table: str, node: int) -> list[tuple[Any, ...]]:
    schema, name = table.split(".")
    key = tree_key(TableName(schema, name))
    blocks = query(pg_cluster.node_dsn(node),
                   f'SELECT block_no, l0, row_count, hash FROM ace_mtree."blocks_{key}" ORDER BY 1')
    inner = query(pg_cluster.node_dsn(node),
                  f'SELECT level, idx, row_count, hash FROM ace_mtree."inner_{key}" ORDER BY 1, 2')
    return [*blocks, *inner]


def _same_as_full_diff(table: str) -> dict[str, Any]:
    tree = run_ace("mtree", "table-diff", CLUSTER, table)
    full = run_ace("table-diff", CLUSTER, table)
    assert tree.code == full.code == 1, (tree.stdout, tree.stderr, full.stdout)
    assert tree.diff()["diffs"] == full.diff()["diffs"]
    assert tree.diff()["summary"]["total_rows_checked"] == full.diff()["summary"][
        "total_rows_checked"]
    return tree.diff()


def _request(table: str) -> MtreeRequest:
    schema, name = table.split(".")
    return MtreeRequest("build", CLUSTER, TableName(schema, name))


def test_batches_run_twice_or_around_writes_leave_a_correct_tree(pg_cluster: Any) -> None:
    table = _table(pg_cluster, "fan_twice")
    settings = load_settings()
    with open_job(_request(table), settings) as job:
        planned = plan_build(job, table_shape(job), "mt_twice", "", slots=4, tasks_per_process=1)
        batches = planned.batches
        assert len(batches) > 2
        hash_batch(planned.spec, batches[0], job.sessions)
        # writes after the first batch's snapshot, in its keys and in later batches' keys
        execute(pg_cluster.node_dsn(1), [
            "UPDATE fan_twice SET v = 'moved' WHERE id IN (10, 1600, 30000)",
            "DELETE FROM fan_twice WHERE id IN (20, 50000)",
            "INSERT INTO fan_twice VALUES (15, 'new', 1, now()), (999999, 'last', 2, now())",
            "UPDATE fan_twice SET id = 25 WHERE id = 190000",  # a key moving across batches
        ])
        for batch in batches:
            hash_batch(planned.spec, batch, job.sessions)
        execute(pg_cluster.node_dsn(2), ["UPDATE fan_twice SET f = 0.5 WHERE id = 40"])
        hash_batch(planned.spec, batches[0], job.sessions)  # a copy run again later
        finish_build(planned.spec, job.sessions)
    execute(pg_cluster.node_dsn(0), ["DELETE FROM fan_twice WHERE id = 100000"])
    diff = _same_as_full_diff(table)
    assert diff["summary"]["diff_rows"] == 11


def test_a_batch_that_comes_after_the_build_finished_changes_nothing(pg_cluster: Any) -> None:
    table = _table(pg_cluster, "fan_late")
    settings = load_settings()
    with open_job(_request(table), settings) as job:
        planned = plan_build(job, table_shape(job), "mt_late", "", slots=4, tasks_per_process=1)
        for batch in planned.batches:
            hash_batch(planned.spec, batch, job.sessions)
        finish_build(planned.spec, job.sessions)
        execute(pg_cluster.node_dsn(1), ["UPDATE fan_late SET v = 'late' WHERE id = 30"])
        # its change stays logged for update, under inner levels that know of it
        assert hash_batch(planned.spec, planned.batches[0], job.sessions) == {
            "n1": 0, "n2": 0, "n3": 0}
    diff = _same_as_full_diff(table)
    assert diff["summary"]["diff_rows"] == 1


def test_tracking_switched_off_and_on_during_the_build_is_refused(pg_cluster: Any) -> None:
    table = _table(pg_cluster, "fan_switch")
    settings = load_settings()
    with open_job(_request(table), settings) as job:
        planned = plan_build(job, table_shape(job), "mt_switch", "", slots=4, tasks_per_process=1)
        for batch in planned.batches:
            hash_batch(planned.spec, batch, job.sessions)
        execute(pg_cluster.node_dsn(1), [  # a change the tree never hears of
            "ALTER TABLE fan_switch DISABLE TRIGGER ace_mtree_upd",
            "UPDATE fan_switch SET v = 'unseen' WHERE id = 500",
            "ALTER TABLE fan_switch ENABLE ALWAYS TRIGGER ace_mtree_upd",
        ])
        with pytest.raises(TableError, match="disabled or changed while"):
            finish_build(planned.spec, job.sessions)
    run = run_ace("mtree", "table-diff", CLUSTER, table)
    assert run.code == 2 and "no Merkle tree" in run.stderr + run.stdout


def test_a_build_started_again_meanwhile_stops_the_first(pg_cluster: Any) -> None:
    table = _table(pg_cluster, "fan_again")
    settings = load_settings()
    with open_job(_request(table), settings) as job:
        first = plan_build(job, table_shape(job), "mt_first", "", slots=4, tasks_per_process=1)
        hash_batch(first.spec, first.batches[0], job.sessions)
        second = plan_build(job, table_shape(job), "mt_second", "", slots=2, tasks_per_process=1)
        with pytest.raises(TableError, match="built again by another command"):
            hash_batch(first.spec, first.batches[1], job.sessions)
        for batch in second.batches:
            hash_batch(second.spec, batch, job.sessions)
        with pytest.raises(TableError, match="built again by another command"):
            finish_build(first.spec, job.sessions)
        finish_build(second.spec, job.sessions)
    execute(pg_cluster.node_dsn(2), ["DELETE FROM fan_again WHERE id = 70"])
    assert _same_as_full_diff(table)["summary"]["diff_rows"] == 1


def test_a_tree_whose_build_did_not_finish_is_refused(pg_cluster: Any) -> None:
    table = _table(pg_cluster, "fan_half")
    settings = load_settings()
    with open_job(_request(table), settings) as job:
        planned = plan_build(job, table_shape(job), "mt_half", "", slots=4, tasks_per_process=1)
        for batch in planned.batches[:-1]:
            hash_batch(planned.spec, batch, job.sessions)
        with pytest.raises(TableError, match="did not finish"):
            finish_build(planned.spec, job.sessions)
    run = run_ace("mtree", "table-diff", CLUSTER, table)
    assert run.code == 2
    assert "no Merkle tree" in run.stderr + run.stdout


@pytest.fixture(scope="module")
def fleet2(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two workers of this module's own, two processes each."""
    with own_fleet(tmp_path_factory.mktemp("mtree-fanout"), ("m1", "m2"),
                   pg_cluster=pg_cluster) as fl:
        yield fl


def _task_id(stderr: str) -> str:
    found = re.search(r"Submitted (mt_\S+)", stderr)
    assert found, stderr
    return found.group(1).rstrip(".:;,")


def _succeeded(fl: Fleet, task: str, task_id: str) -> list[str]:
    pattern = re.compile(rf"{re.escape(task)}\[({re.escape(task_id)}\.\w+)\] succeeded")
    return [m.group(1) for n in fl.names for m in pattern.finditer(fl.log(n))]


def _diff_file(stdout: str) -> dict[str, Any]:
    found = re.search(r"(?:Diffs|Diff summary) written to (\S+\.json)", stdout)
    assert found, stdout
    return dict(json.loads(Path(found.group(1)).read_text()))


def test_the_fleet_builds_in_batches_and_diffs_in_groups_as_in_process(
        fleet2: Fleet, pg_cluster: Any) -> None:
    table = _table(pg_cluster, "fan_items")
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    here = [_tree(pg_cluster, table, n) for n in range(3)]
    built = fleet2.ace("mtree", "build", CLUSTER, table)
    assert built.returncode == 0, built.stdout + built.stderr
    build_id = _task_id(built.stderr)
    assert len(_succeeded(fleet2, "ace.mtree_hash", build_id)) > 1
    record = TaskStore(fleet2.env["ACE_DATABASE_URL"]).get(build_id)
    assert record is not None and record.status == COMPLETED
    assert record.progress_done == record.progress_total == 13  # ranges of 16 leaves
    assert record.result["blocks"] == 201  # cut at every 100th of 20000 keys
    same = fleet2.ace("mtree", "table-diff", CLUSTER, table)  # no leaf differs: no chord at all
    assert same.returncode == 0, same.stdout + same.stderr
    assert _diff_file(same.stdout)["summary"]["total_rows_checked"] == ROWS
    assert [_tree(pg_cluster, table, n) for n in range(3)] == here  # the very same tree
    # differences spread over many leaves (an eighth of them: more, and the whole table is
    # compared as table-diff does), at both ends, on two nodes
    execute(pg_cluster.node_dsn(1), [
        "UPDATE fan_items SET v = 'changed' WHERE id % 13700 = 0",
        "INSERT INTO fan_items VALUES (5, 'first', 0, now()), (300000, 'past', 0, now())",
    ])
    execute(pg_cluster.node_dsn(2), ["DELETE FROM fan_items WHERE id % 21100 = 0",
                                     "UPDATE fan_items SET at = at + interval '1 s' "
                                     "WHERE id = 1000"])
    on_fleet = fleet2.ace("mtree", "table-diff", CLUSTER, table)
    assert on_fleet.returncode == 1, on_fleet.stdout + on_fleet.stderr
    diff_id = _task_id(on_fleet.stderr)
    fleet_doc = _diff_file(on_fleet.stdout)
    assert len(_succeeded(fleet2, "ace.mtree_leaves", diff_id)) > 1
    assert fleet_doc["summary"]["executor"] == "fleet"
    assert fleet_doc["summary"]["mtree"]["compared_as"] == "leaves"
    # every leaf agreed at the re-check above: the differing ones are read by their keys
    assert fleet_doc["summary"]["mtree"]["leaves_by_keys"] == fleet_doc["summary"]["mtree"][
        "leaves_differing"] > 1
    record = TaskStore(fleet2.env["ACE_DATABASE_URL"]).get(diff_id)
    assert record is not None and record.status == COMPLETED
    assert record.progress_done == record.progress_total == fleet_doc["summary"]["ranges_total"]
    local_doc = _same_as_full_diff(table)  # in-process, after the fleet's update
    assert fleet_doc["diffs"] == local_doc["diffs"]
    for field in ("diff_rows", "total_rows_checked", "diff_rows_by_pair", "ranges_total"):
        assert fleet_doc["summary"][field] == local_doc["summary"][field], field


def _runner_of(fl: Fleet, marker: str, offsets: dict[str, int]) -> str | None:
    for name in fl.names:
        if marker in fl.log(name)[offsets[name]:]:
            return name
    return None


@dataclass
class Killed:
    """A command on a fleet of its own, one of whose workers was killed mid-way."""

    fleet: Fleet
    cli: subprocess.Popen[str]
    facts: dict[str, Any]


def _kill_mid_diff(pg_cluster: Any, fl: Fleet) -> Killed:
    table = _table(pg_cluster, "fan_kill")
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE fan_kill SET v = 'x' WHERE id % 9900 = 0"])
    reference = run_ace("table-diff", CLUSTER, table)
    assert reference.code == 1
    offsets = {n: len(fl.log(n)) for n in fl.names}
    conn = psycopg2.connect(pg_cluster.node_dsn(2))
    try:
        # the walk reads only ACE's tables: the groups, which read the table, wait here
        conn.cursor().execute("LOCK TABLE fan_kill IN ACCESS EXCLUSIVE MODE")
        cli = subprocess.Popen([sys.executable, "-m", "ace_api", "mtree", "table-diff", CLUSTER,
                                table], env={**fl.env, "ACE_NO_PROGRESS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        marker = "ace.mtree_leaves[mt_"
        wait_for(lambda: _runner_of(fl, marker, offsets) is not None, 60, "a leaf group")
        victim = _runner_of(fl, marker, offsets)
        assert victim is not None
        time.sleep(0.5)
        fl.kill(victim)
    finally:
        conn.rollback()
        conn.close()
    return Killed(fl, cli, {"reference": reference.diff()})


def _kill_mid_build(pg_cluster: Any, fl: Fleet) -> Killed:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS fan_build",
        "CREATE TABLE fan_build (id int PRIMARY KEY, v text)",
        "INSERT INTO fan_build SELECT g, 'v' || g FROM generate_series(1, 100000) g",
    ])
    assert run_ace("mtree", "init", CLUSTER).code == 0
    blocks = f"ace_mtree.blocks_{tree_key(TableName('public', 'fan_build'))}"
    offsets = {n: len(fl.log(n)) for n in fl.names}
    conn = psycopg2.connect(pg_cluster.node_dsn(2))
    cur = conn.cursor()
    cli = subprocess.Popen([sys.executable, "-m", "ace_api", "mtree", "build", CLUSTER,
                            "public.fan_build"], env={**fl.env, "ACE_NO_PROGRESS": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # as soon as tracking starts on the third node, its table is locked: the batches
        # hash the other nodes and wait there, half done
        wait_for(lambda: (cur.execute("SELECT to_regclass(%s)", (blocks,)), cur.fetchone()[0],
                          conn.rollback())[1] is not None, 60, "tracking", interval=0.005)
        cur.execute("LOCK TABLE fan_build IN ACCESS EXCLUSIVE MODE")
        marker = "ace.mtree_hash[mt_"
        wait_for(lambda: _runner_of(fl, marker, offsets) is not None, 60, "a batch")
        wait_for(lambda: query(pg_cluster.node_dsn(2),
                               "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                               "'Lock' AND query LIKE '%%fan_build%%'")[0][0] >= 2,
                 60, "batches waiting on the third node")
        victim = _runner_of(fl, marker, offsets)
        assert victim is not None
        fl.kill(victim)
    except BaseException:
        cli.kill()
        raise
    finally:
        conn.rollback()
        conn.close()
    return Killed(fl, cli, {})


# each test that kills a worker, and how it does
KILLS: dict[str, Callable[[Any, Fleet], Killed]] = {
    "test_a_worker_killed_mid_diff_leaves_its_group_to_the_other": _kill_mid_diff,
    "test_a_worker_killed_mid_build_leaves_its_batches_to_the_other": _kill_mid_build,
}


@pytest.fixture(scope="module")
def killed(request: pytest.FixtureRequest, pg_cluster: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Killed | Exception]]:
    """Each selected killing test's command, a worker killed under it, on a fleet of its own.

    Both are started before the first of these tests, so that the visibility
    timeouts they wait for pass together; what went wrong in one is raised by
    its own test.
    """
    with started_on_own_fleets(request, pg_cluster, tmp_path_factory, KILLS, "mtree-kill",
                               ("k1", "k2")) as runs:
        try:
            yield runs
        finally:
            for run in runs.values():
                if isinstance(run, Killed) and run.cli.poll() is None:
                    run.cli.kill()
                    run.cli.wait(10)



def test_a_worker_killed_mid_diff_leaves_its_group_to_the_other(
        killed: dict[str, Killed | Exception], request: pytest.FixtureRequest) -> None:
    run = scenario_of(killed, request)
    stdout, stderr = run.cli.communicate(timeout=180)
    assert run.cli.returncode == 1, stdout + stderr
    assert _diff_file(stdout)["diffs"] == run.facts["reference"]["diffs"]
    task_id = _task_id(stderr)
    groups = _succeeded(run.fleet, "ace.mtree_leaves", task_id)
    assert len(groups) == len(set(groups))  # each group counted once


def test_a_worker_killed_mid_build_leaves_its_batches_to_the_other(
        killed: dict[str, Killed | Exception], request: pytest.FixtureRequest,
        pg_cluster: Any) -> None:
    run = scenario_of(killed, request)
    stdout, stderr = run.cli.communicate(timeout=180)
    assert run.cli.returncode == 0, stdout + stderr
    execute(pg_cluster.node_dsn(0), ["UPDATE fan_build SET v = 'x' WHERE id % 7919 = 0",
                                     "DELETE FROM fan_build WHERE id = 100000"])
    diff = _same_as_full_diff("public.fan_build")
    assert diff["summary"]["diff_rows"] == 13
