"""``ace mtree`` through the other front doors: the CLI on the fleet, REST, and the scheduler.

The same trees, the same diff file: a tree's table-diff run by a worker must
report what a full table-diff reports, and task-status gives it as it gives a
table-diff's (``diff_file``, ``total_rows``, ``mismatched_rows``, ``summary``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ApiServer, make_certs, wait_for_final
from diff_helpers import execute, on_every_node, run_ace
from fleet_helpers import Fleet, free_port, send_as_beat, wait_for

from ace_shared.tasks.schedule import scheduled_diffs
from ace_shared.tasks.store import COMPLETED, TaskStore


def _diff_of(stdout: str) -> dict[str, Any]:
    found = re.search(r"(?:Diffs|Diff summary) written to (\S+\.json)", stdout)
    assert found, stdout
    return json.loads(Path(found.group(1)).read_text())


@pytest.fixture(scope="module")
def tracked(pg_cluster: Any) -> str:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_fleet",
        "CREATE TABLE mt_fleet (id int PRIMARY KEY, v text, f float8)",
        "INSERT INTO mt_fleet SELECT g, 'v' || g, g / 3.0 FROM generate_series(1, 4000) g",
    ])
    assert run_ace("mtree", "init", "testclus").code == 0
    assert run_ace("mtree", "build", "testclus", "public.mt_fleet").code == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_fleet SET v = 'changed' WHERE id IN (5, 3999)",
                                     "DELETE FROM mt_fleet WHERE id = 2000"])
    return "public.mt_fleet"


def test_the_fleet_runs_a_tree_diff_and_finds_what_a_full_diff_finds(
        fleet: Fleet, tracked: str) -> None:
    on_fleet = fleet.ace("mtree", "table-diff", "testclus", tracked)
    assert on_fleet.returncode == 1, on_fleet.stdout + on_fleet.stderr
    assert "Submitted mt_" in on_fleet.stderr
    full = run_ace("table-diff", "testclus", tracked)
    assert full.code == 1
    assert _diff_of(on_fleet.stdout)["diffs"] == full.diff()["diffs"]


def test_a_tree_diff_of_a_table_that_mostly_differs_runs_as_table_diff_on_the_fleet(
        fleet: Fleet, pg_cluster: Any) -> None:
    """Changes in every leaf: the fleet compares the whole table with table-diff's own
    ranges and tasks, says so, and finds what a full diff finds."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_fleet_whole",
        "CREATE TABLE mt_fleet_whole (id int PRIMARY KEY, v text)",
        "INSERT INTO mt_fleet_whole SELECT g, 'v' || g FROM generate_series(1, 3000) g",
    ])
    table = "public.mt_fleet_whole"
    assert run_ace("mtree", "build", "testclus", table).code == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_fleet_whole SET v = 'n2' WHERE id % 50 = 3"])
    on_fleet = fleet.ace("mtree", "table-diff", "testclus", table)
    assert on_fleet.returncode == 1, on_fleet.stdout + on_fleet.stderr
    assert "so the whole table was compared as table-diff compares it." in on_fleet.stderr
    doc = _diff_of(on_fleet.stdout)
    assert doc["summary"]["mtree"]["compared_as"] == "table-diff"
    full = run_ace("table-diff", "testclus", table)
    assert full.code == 1
    assert doc["diffs"] == full.diff()["diffs"]
    assert doc["summary"]["diff_rows"] == 60
    assert doc["summary"]["total_rows_checked"] == full.diff()["summary"]["total_rows_checked"]


def test_no_wait_returns_the_task_id_and_the_fleet_finishes_the_update(
        fleet: Fleet, tracked: str) -> None:
    res = fleet.ace("mtree", "update", "testclus", tracked, "--no-wait")
    assert res.returncode == 0, res.stderr
    task_id = res.stdout.strip()
    assert re.fullmatch(r"mt_\S+", task_id), res.stdout
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    wait_for(lambda: (rec := store.get(task_id)) is not None and rec.status == COMPLETED,
             60, f"mtree update {task_id} to complete")


def test_a_re_check_with_a_node_down_fails_naming_it_and_the_next_ones_run(
        fleet: Fleet, tracked: str, pg_cluster: Any) -> None:
    """A worker plans a tree's diff on the sessions it keeps between tasks: a node down
    fails the plan in one sentence, and once the node is back the workers plan again,
    without a restart, on connections made afresh."""
    assert fleet.ace("mtree", "table-diff", "testclus", tracked).returncode == 1
    pg_cluster.stop_node(2)
    try:
        down = fleet.ace("mtree", "table-diff", "testclus", tracked)
    finally:
        pg_cluster.start_node(2)
    assert down.returncode == 2, down.stdout + down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("ace: error: Node n3 cannot be reached")
    assert "Traceback" not in down.stderr
    full = run_ace("table-diff", "testclus", tracked).diff()["diffs"]
    for _ in range(4):  # the fleet's four processes, whichever takes each plan
        again = fleet.ace("mtree", "table-diff", "testclus", tracked)
        assert again.returncode == 1, again.stdout + again.stderr
        assert _diff_of(again.stdout)["diffs"] == full


@pytest.fixture(scope="module")
def api(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    certs = make_certs(tmp_path_factory.mktemp("mtree-certs"))
    server = ApiServer(fleet.env, certs, free_port(), fleet.workdir / "mtree-api.log")
    server.start()
    yield server
    server.stop()


def test_rest_queues_each_action_and_task_status_gives_the_diff(api: ApiServer,
                                                                tracked: str,
                                                                pg_cluster: Any) -> None:
    # the caller logs in as its own role (docs/security.md), here one with rights on the trees
    pg_cluster.serve_role("mt_caller")
    on_every_node(pg_cluster, [
        "GRANT SELECT ON mt_fleet TO mt_caller", "GRANT USAGE ON SCHEMA ace_mtree TO mt_caller",
        "GRANT ALL ON ALL TABLES IN SCHEMA ace_mtree TO mt_caller"])
    session = api.session("mt_caller")
    update = session.get(api.url("/ace/mtree/update"), timeout=10,
                         params={"cluster_name": "testclus", "table_name": tracked})
    assert update.status_code == 200, update.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{update.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc
    response = session.post(api.url("/ace/mtree/table-diff"), timeout=10,
                            json={"cluster_name": "testclus", "table_name": tracked})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert task_id.startswith("mt_")
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{task_id}"))
    assert doc["status"] == "COMPLETED", doc
    assert doc["result"]["mismatched_rows"] == 3
    assert Path(doc["result"]["diff_file"]).is_file()
    bad = session.post(api.url("/ace/mtree/build"), timeout=10,
                       json={"cluster_name": "testclus", "table_name": tracked, "block_rows": 5})
    assert bad.status_code == 400 and "block_rows" in bad.json()["error"]
    spec = session.get(api.url("/ace/swagger.json"), timeout=10).json()
    assert {"/mtree/init", "/mtree/build", "/mtree/update", "/mtree/table-diff",
            "/mtree/teardown"} <= set(spec["paths"])


def test_a_schedule_may_run_a_tree_diff() -> None:
    jobs = ({"name": "big", "cluster_name": "c", "command": "mtree-table-diff",
             "table_name": "public.big"},)
    got = scheduled_diffs(jobs, ({"job_name": "big", "run_frequency": "1h", "enabled": True,
                                  "rerun_after": "10m"},), "5m")
    assert [(s.command, s.options["table_name"], s.rerun_after) for s in got] == [
        ("mtree-table-diff", "public.big", 600)]


def test_a_scheduled_tree_diff_runs_on_the_fleet_and_is_rechecked(fleet: Fleet,
                                                                  tracked: str) -> None:
    """What beat sends for an mtree-table-diff schedule with rerun_after: the tree's diff,
    then table-rerun of its diff file (the same format as a table-diff's)."""
    send_as_beat(fleet.env, "ace.scheduled_diff", [
        "tree_job", {"cluster_name": "testclus", "table_name": tracked},
        "mtree-table-diff", 2])
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])

    def first() -> Any:
        return next((r for r in store.recent(50) if r.requested_by == "scheduler:tree_job"
                     and r.task_type == "mtree"), None)

    def verdict() -> Any:
        diff = first()
        return next((r for r in store.recent(50) if r.task_type == "scheduled-recheck"
                     and diff and r.options.get("rerun_of") == diff.task_id
                     and r.status == COMPLETED), None)
    wait_for(lambda: verdict() is not None, 90, "the tree diff's recheck verdict")
    diff = store.get(first().task_id)
    assert diff.status == COMPLETED and diff.result["mismatched_rows"] == 3, diff.result
    assert diff.result["summary"]["mtree"]["leaves_differing"] >= 1
    full = run_ace("table-diff", "testclus", tracked)
    assert json.loads(Path(diff.result["diff_file"]).read_text())["diffs"] == \
        full.diff()["diffs"]
    summary = verdict().result["summary"]
    assert summary["persisted"] is True and summary["remaining_rows"] == 3
    assert store.get(summary["rerun_task"]).task_type == "table-rerun"

