"""A repair plan through the API on the fleet: the dry run answers the resolved plan at
once, and the same plan in table-repair's body repairs the nodes as the caller's role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from api_helpers import ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from fleet_helpers import Fleet, free_port

CALLER = "plans_caller"
TABLE = "public.pa_items"
PLAN = {"version": 1, "default": {"action": "keep", "node": "n1"},
        "tables": {TABLE: {"rules": [{"name": "extra rows stay", "when": {"only_on": "n2"},
                                      "do": "keep_both"}]}}}


@pytest.fixture(scope="module")
def api(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    pki: ApiCerts = make_certs(tmp_path_factory.mktemp("plans-certs"))
    env = {**fleet.env, "ACE_API_ALLOWED_CNS": f"ace,{CALLER}"}
    server = ApiServer(env, pki, free_port(), fleet.workdir / "api-plans.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def table(pg_cluster: Any) -> str:
    pg_cluster.serve_role(CALLER, repair=True)
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS pa_items",
                "CREATE TABLE pa_items (id int PRIMARY KEY, label text)",
                "INSERT INTO pa_items SELECT g, 'item ' || g FROM generate_series(1, 50) g",
                f"GRANT ALL ON pa_items TO {CALLER}")
    run_sql(pg_cluster.node_dsn(1), "UPDATE pa_items SET label = 'drift' WHERE id = 7",
            "INSERT INTO pa_items VALUES (900, 'n2 only')")
    return TABLE


def _rows(pg_cluster: Any, node: int) -> list[tuple[Any, ...]]:
    with psycopg2.connect(pg_cluster.node_dsn(node)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, label FROM pa_items ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    return rows


def test_a_plan_through_the_api_dry_run_then_repair(api: ApiServer, pg_cluster: Any,
                                                     table: str) -> None:
    session = api.session(CALLER)
    diff = session.post(api.url("/ace/table-diff"), timeout=10,
                        json={"cluster_name": "testclus", "table_name": table})
    assert diff.status_code == 200, diff.text
    done, _ = wait_for_final(session, api.url(f"/ace/task-status/{diff.json()['task_id']}"))
    assert done["status"] == "COMPLETED", done.get("error")
    body = {"cluster_name": "testclus", "table_name": table, "diff_file": done["task_id"],
            "repair_plan": PLAN}
    before = [_rows(pg_cluster, i) for i in range(3)]
    preview = session.post(api.url("/ace/table-repair/plan"), json=body, timeout=30)
    assert preview.status_code == 200, preview.text
    rules = {r["rule"]: r for r in preview.json()["rules"]}
    assert rules['rule 1 "extra rows stay"']["writes"] == {
        "n1": {"insert": 1, "update": 0, "delete": 0},
        "n3": {"insert": 1, "update": 0, "delete": 0}}
    assert rules["the plan's default"]["matched"] == 1
    assert [_rows(pg_cluster, i) for i in range(3)] == before
    repair = session.post(api.url("/ace/table-repair"), json=body, timeout=10)
    assert repair.status_code == 200, repair.text
    result, _ = wait_for_final(session, api.url(f"/ace/task-status/{repair.json()['task_id']}"))
    assert result["status"] == "COMPLETED", result.get("error")
    after = [_rows(pg_cluster, i) for i in range(3)]
    assert after[0] == after[1] == after[2]
    assert (900, "n2 only") in after[0] and (7, "item 7") in after[0]
