"""``ace task-status`` and ``ace diff-file`` against a real fleet, as a user calls them."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from fleet_helpers import Fleet


def _exec(pg_cluster, node: int, *statements: str) -> None:  # type: ignore[no-untyped-def]
    with psycopg2.connect(pg_cluster.node_dsn(node)) as conn, conn.cursor() as cur:
        for stmt in statements:
            cur.execute(stmt)
    conn.close()


@pytest.fixture(scope="module")
def table(pg_cluster):  # type: ignore[no-untyped-def]
    for i in range(3):
        _exec(pg_cluster, i, "DROP TABLE IF EXISTS public.tc_rows",
              "CREATE TABLE public.tc_rows (id int PRIMARY KEY, v text)",
              "INSERT INTO public.tc_rows SELECT g, 'v' || g FROM generate_series(1, 400) g")
    _exec(pg_cluster, 1, "UPDATE public.tc_rows SET v = 'other' WHERE id IN (7, 301)")
    return "public.tc_rows"


def test_a_queued_diff_is_followed_and_its_files_fetched_by_id(fleet: Fleet, table: str,
                                                               tmp_path: Path) -> None:
    queued = fleet.ace("table-diff", "testclus", table, "--output", "csv", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    task_id = queued.stdout.strip()
    followed = fleet.ace("task-status", task_id, "--follow", timeout=90)
    assert followed.returncode == 1, followed.stderr  # as table-diff exits: differences
    assert f"{task_id}: table-diff of {table} on testclus: COMPLETED" in followed.stdout
    assert f"ace diff-file {task_id} --format csv" in followed.stdout
    again = fleet.ace("task-status", task_id, "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["status"] == "COMPLETED"

    target = tmp_path / "mine.json"
    fetched = fleet.ace("diff-file", task_id, "--output-file", str(target))
    assert fetched.returncode == 0 and f"Wrote {target}" in fetched.stdout, fetched.stderr
    rows = json.loads(target.read_text())["diffs"]
    assert {r["id"] for pair in rows.values() for side in pair.values() for r in side} == \
        {"7", "301"}
    csv = fleet.ace("diff-file", task_id, "--format", "csv", "--output-file", "-")
    assert csv.returncode == 0 and "other" in csv.stdout


def test_task_status_of_a_diff_of_equal_tables_exits_0_and_an_unknown_task_2(
        fleet: Fleet, pg_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        _exec(pg_cluster, i, "DROP TABLE IF EXISTS public.tc_same",
              "CREATE TABLE public.tc_same (id int PRIMARY KEY)",
              "INSERT INTO public.tc_same SELECT generate_series(1, 50)")
    queued = fleet.ace("table-diff", "testclus", "public.tc_same", "--no-wait")
    task_id = queued.stdout.strip()
    assert fleet.ace("task-status", task_id, "--follow", "--quiet", timeout=90).returncode == 0
    unknown = fleet.ace("task-status", "td_20240315_123456_ffffff")
    assert unknown.returncode == 2 and "not in the task store" in unknown.stderr
    html = fleet.ace("diff-file", task_id, "--format", "html")
    assert html.returncode == 2 and "no html file (it offers json)" in html.stderr
