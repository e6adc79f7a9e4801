"""The checks through every other front door: REST over mutual TLS, and the CLI on a fleet.

A real ``ace api`` (gunicorn, client certificates) and two real Celery workers
on their own Redis: repset-diff fans out into one table-diff per table and
its collector writes one result; schema-diff and spock-diff run as tasks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from diff_helpers import NODES, as_admin_on_every_node, on_every_node
from fleet_helpers import Fleet, free_port, own_fleet
from spock_fixtures import drop_spock, install_spock_mesh

TABLES = ("public.ck_same", "public.ck_diff", "public.ck_gone", "public.ck_nopk")
ROLE = "ck_reader"


@pytest.fixture(scope="module")
def checks_fleet(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory.mktemp("checks-fleet"), ("ck1", "ck2"),
                   pg_cluster=pg_cluster) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    return make_certs(tmp_path_factory.mktemp("checks-certs"))


@pytest.fixture(scope="module")
def api(checks_fleet: Fleet, certs: ApiCerts) -> Iterator[ApiServer]:
    server = ApiServer(checks_fleet.env, certs, free_port(), checks_fleet.workdir / "api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def repset(pg_cluster: Any) -> Iterator[Any]:
    """Set ``default``: one identical table, one differing, one missing on n3, one failing."""
    as_admin_on_every_node(pg_cluster, [
        f"DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"GRANT {ROLE} TO ace", f"GRANT pg_read_all_data TO {ROLE}"])
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {t}" for t in TABLES] + [
        "CREATE TABLE ck_same (id int PRIMARY KEY, v text)",
        "INSERT INTO ck_same SELECT i, 'v' || i FROM generate_series(1, 5000) i",
        "CREATE TABLE ck_diff (id int PRIMARY KEY, v text)",
        "INSERT INTO ck_diff SELECT i, 'v' || i FROM generate_series(1, 5000) i",
        "CREATE TABLE ck_gone (id int PRIMARY KEY)",
        "CREATE TABLE ck_nopk (id int, v text)",
    ])
    pg_cluster.serve_role(ROLE)  # ACE logs in as the caller's role (docs/security.md)
    dsns = [pg_cluster.node_dsn(i) for i in range(3)]
    run_sql(dsns[1], "UPDATE ck_diff SET v = 'changed' WHERE id IN (7, 4000)")
    install_spock_mesh(dsns, NODES, TABLES, only=NODES[:2])
    install_spock_mesh(dsns, NODES, [t for t in TABLES if t != "public.ck_gone"],
                       only=NODES[2:])
    run_sql(dsns[2], "DROP TABLE ck_gone")
    yield pg_cluster
    for dsn in dsns:
        drop_spock(dsn)
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {t}" for t in TABLES])


def _outcomes(result: dict[str, Any]) -> dict[str, str]:
    return {t["table"]: t["outcome"] for t in result["tables"]}


EXPECTED = {"public.ck_same": "identical", "public.ck_diff": "differs",
            "public.ck_gone": "missing on some nodes", "public.ck_nopk": "failed"}


def test_repset_diff_over_the_api_fans_out_and_collects(api: ApiServer, repset: Any) -> None:
    session = api.session(ROLE)
    response = session.post(api.url("/ace/repset-diff"), timeout=10,
                            json={"cluster_name": "testclus", "repset_name": "default"})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert task_id.startswith("rd_") and response.json()["submitted_at"].endswith("Z")
    doc, seen = wait_for_final(session, api.url(f"/ace/task-status/{task_id}"))
    assert doc["status"] == "COMPLETED", doc
    assert doc["task_type"] == "repset-diff" and doc["requested_by"] == ROLE
    assert doc["progress"]["done"] == doc["progress"]["total"] == 3
    result = doc["result"]["summary"]
    assert _outcomes(result) == EXPECTED
    assert result["exit_code"] == 2
    assert json.loads(Path(doc["result"]["diff_file"]).read_text())["tables"] == result["tables"]
    diffed = {t["table"]: t for t in result["tables"]}["public.ck_diff"]
    assert diffed["diff_rows_by_pair"] == {"n1/n2": 2, "n2/n3": 2}


def test_schema_diff_with_query_parameters(api: ApiServer, repset: Any) -> None:
    session = api.session(ROLE)
    response = session.get(api.url("/ace/schema-diff"), timeout=10, params={
        "cluster_name": "testclus", "schema_name": "public", "nodes": "n1,n3",
        "output": "html"})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert task_id.startswith("sd_")
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{task_id}"))
    assert doc["status"] == "COMPLETED", doc
    result = doc["result"]["summary"]
    assert ("table", "ck_gone", "missing on n3") in {
        (e["kind"], e["identity"], e["differs"]) for e in result["differences"]}
    assert Path(result["report_file"]).is_file()


def test_schema_diff_with_data_fans_out_on_the_fleet(api: ApiServer, repset: Any) -> None:
    on_every_node(repset, [
        "DROP SCHEMA IF EXISTS ckd CASCADE", "CREATE SCHEMA ckd",
        "CREATE TABLE ckd.a (id int PRIMARY KEY, v text)",
        "INSERT INTO ckd.a SELECT i, 'v' || i FROM generate_series(1, 3000) i",
        "CREATE TABLE ckd.b (id int PRIMARY KEY)", "GRANT USAGE ON SCHEMA ckd TO ck_reader"])
    run_sql(repset.node_dsn(2), "DELETE FROM ckd.a WHERE id = 2500")
    try:
        session = api.session(ROLE)
        response = session.post(api.url("/ace/schema-diff"), timeout=10, json={
            "cluster_name": "testclus", "schema_name": "ckd", "ddl_only": False})
        assert response.status_code == 200, response.text
        doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
    finally:
        on_every_node(repset, ["DROP SCHEMA IF EXISTS ckd CASCADE"])
    assert doc["status"] == "COMPLETED", doc
    result = doc["result"]["summary"]
    assert result["differences"] == [] and result["exit_code"] == 1
    assert {t["table"]: t["outcome"] for t in result["tables"]} == {
        "ckd.a": "differs", "ckd.b": "identical"}


def test_spock_diff_over_the_api(api: ApiServer, repset: Any) -> None:
    session = api.session(ROLE)
    response = session.post(api.url("/ace/spock-diff"), timeout=10,
                            json={"cluster_name": "testclus"})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert task_id.startswith("spd_")
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{task_id}"))
    assert doc["status"] == "COMPLETED", doc
    result = doc["result"]["summary"]
    assert {(tuple(e["nodes"]), e["identity"]) for e in result["differences"]} == {
        (("n1", "n3"), "default: public.ck_gone"), (("n2", "n3"), "default: public.ck_gone")}


@pytest.mark.parametrize("path, body, status, words", [
    ("/ace/repset-diff", {"cluster_name": "nosuch", "repset_name": "default"}, 404, "nosuch"),
    ("/ace/repset-diff", {"cluster_name": "testclus"}, 400, "repset_name"),
    ("/ace/schema-diff", {"cluster_name": "testclus", "schema_name": "public",
                          "output": "csv"}, 400, "output"),
    ("/ace/spock-diff", {"cluster_name": "testclus", "nodes": "n1,n7"}, 404, "n7"),
    ("/ace/schema-diff", {"cluster_name": "testclus", "schema_name": "public",
                          "skip_file": "/etc/passwd"}, 400, "skip_file"),
])
def test_bad_input_is_one_json_sentence(api: ApiServer, path: str, body: dict[str, Any],
                                        status: int, words: str) -> None:
    response = api.session(ROLE).post(api.url(path), json=body, timeout=10)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert words in response.json()["error"]


def test_openapi_documents_the_checks(api: ApiServer) -> None:
    doc = api.session(ROLE).get(api.url("/ace/swagger.json"), timeout=10).json()
    for path in ("/schema-diff", "/repset-diff", "/spock-diff"):
        assert set(doc["paths"][path]) >= {"get", "post"}, path


def test_repset_diff_on_the_fleet_from_the_cli(checks_fleet: Fleet, repset: Any) -> None:
    done = checks_fleet.ace("repset-diff", "testclus", "default")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "public.ck_diff: differs (n1/n2: 2 rows, n2/n3: 2 rows;" in done.stdout
    assert "public.ck_nopk: failed: " in done.stdout


def test_a_scheduled_repset_diff_is_rechecked_after_rerun_after(
        checks_fleet: Fleet, repset: Any, tmp_path: Path) -> None:
    """ck_diff differs for good; ck_same differs only until it heals, before the recheck.

    rerun_after is 40s so that, even on a busy machine, the first diff has finished and the
    test has healed ck_same before the recheck runs.
    """
    from fleet_helpers import wait_for

    from ace_shared.tasks.store import COMPLETED, TaskStore
    dsn2 = repset.node_dsn(1)
    run_sql(dsn2, "UPDATE ck_same SET v = 'in flight' WHERE id = 42")
    config = tmp_path / "ace_config.py"
    config.write_text(
        "schedule_jobs = [{'name': 'rs_job', 'cluster_name': 'testclus',\n"
        "                  'command': 'repset-diff', 'repset_name': 'default'}]\n"
        "schedule_config = [{'job_name': 'rs_job', 'run_frequency': '2s', 'enabled': True,\n"
        "                    'rerun_after': '40s'}]\n"
        "MIN_RUN_FREQUENCY = '1s'\n")
    env = {**checks_fleet.env, "ACE_CONFIG": str(config)}
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "ace_workers", "beat", "-s",
         str(tmp_path / "beat-schedule"), "-l", "INFO"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = TaskStore(checks_fleet.env["ACE_DATABASE_URL"])

    def scheduled() -> list[Any]:
        return sorted((r for r in store.recent(50) if r.requested_by == "scheduler:rs_job"
                       and r.task_type == "repset-diff"), key=lambda r: r.submitted_at)
    try:
        wait_for(lambda: bool(scheduled()), 60, "a scheduled repset-diff")
    finally:
        beat.terminate()
        beat.wait(20)
    first = scheduled()[0]
    wait_for(lambda: store.get(first.task_id).status == COMPLETED, 60, "the first diff")
    outcomes = _outcomes(store.get(first.task_id).result["summary"])
    assert outcomes["public.ck_same"] == outcomes["public.ck_diff"] == "differs"
    run_sql(dsn2, "UPDATE ck_same SET v = 'v42' WHERE id = 42")  # replication caught up

    def verdicts() -> list[Any]:
        return [r for r in store.recent(100) if r.task_type == "scheduled-recheck"
                and r.options.get("rerun_of") == first.task_id and r.status == COMPLETED]
    wait_for(lambda: bool(verdicts()), 150, "the recheck's verdict")
    verdict = verdicts()[0].result["summary"]
    assert verdict["persisted"] is True
    assert verdict["persistent_tables"] == ["public.ck_diff"]
    assert verdict["healed_tables"] == ["public.ck_same"]
    rerun = store.get(verdict["rerun_task"])
    assert rerun.options["skip_tables"] == "public.ck_gone,public.ck_nopk"


def test_a_role_without_catalog_rights_gets_a_failed_task_saying_so(
        api: ApiServer, repset: Any) -> None:
    """The caller's role is the session's: without USAGE on spock it may not read the set."""
    as_admin_on_every_node(repset, [
        "DO $$ BEGIN CREATE ROLE ck_norights NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$", "GRANT ck_norights TO ace"])
    repset.serve_role("ck_norights")
    session = api.session("ck_norights")
    for path, body in (("/ace/spock-diff", {}), ("/ace/repset-diff", {"repset_name": "default"})):
        response = session.post(api.url(path), timeout=10,
                                json={"cluster_name": "testclus", **body})
        assert response.status_code == 200, response.text
        doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
        assert doc["status"] == "FAILED", doc
        assert "permission denied" in doc["error"].lower(), doc["error"]
        assert "\n" not in doc["error"]


def test_a_scheduled_table_diff_is_rechecked_by_table_rerun(checks_fleet: Fleet,
                                                            repset: Any) -> None:
    """What beat sends for a table-diff schedule with rerun_after: the recheck reruns its rows."""
    from fleet_helpers import send_as_beat, wait_for

    from ace_shared.tasks.store import COMPLETED, TaskStore
    send_as_beat(checks_fleet.env, "ace.scheduled_diff", [
        "td_job", {"cluster_name": "testclus", "table_name": "public.ck_diff"},
        "table-diff", 2])
    store = TaskStore(checks_fleet.env["ACE_DATABASE_URL"])

    def verdict() -> Any:
        first = [r for r in store.recent(50) if r.requested_by == "scheduler:td_job"
                 and r.task_type == "table-diff"]
        return next((r for r in store.recent(50) if r.task_type == "scheduled-recheck"
                     and first and r.options.get("rerun_of") == first[0].task_id
                     and r.status == COMPLETED), None)
    wait_for(lambda: verdict() is not None, 90, "the table-diff recheck's verdict")
    summary = verdict().result["summary"]
    assert summary["persisted"] is True and summary["remaining_rows"] == 2
    assert store.get(summary["rerun_task"]).task_type == "table-rerun"
