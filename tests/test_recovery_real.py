"""Recovering from a failed node, on real replication: pglogical in ``acedb``, native in ``natdb``.

Three nodes with ``track_commit_timestamp = on``. n1 publishes ``rc_t`` to n2 and
n3. Then n2's subscription is disabled, n1 makes four changes (two inserts, an
update, a delete) that reach n3 only, n2 and n3 each insert a row of their own,
and n1 is stopped. Each step of docs/recovery.md is run as written there:
find what n1 left behind, repair the survivors from the one that received
most, reconcile what they did on their own, and check with a full diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from api_helpers import ApiServer, make_certs, wait_for_final
from diff_helpers import REPO_ROOT, AceRun, run_ace
from fleet_helpers import Fleet, free_port, own_fleet, send_as_beat
from replication_setup import autocommit, cluster_dir, libpq, server_settings, wait_for

CLUSTER = "recovclus"
NODES = ("n1", "n2", "n3")
KINDS = ("pglogical", "native")
DB = {"pglogical": "acedb", "native": "natdb"}
TABLE = "public.rc_t"
N1_KEYS = {"3", "5", "11", "12"}  # what n1 changed while n2 was cut off
API_ROLE = "rec_api"


def _sql(cluster: Any, i: int, db: str, *statements: str) -> list[tuple[Any, ...]]:
    return autocommit(libpq(cluster, i, db), *statements)


def _pglogical(cluster: Any) -> None:
    db = DB["pglogical"]
    for i, name in enumerate(NODES):
        _sql(cluster, i, db, "CREATE EXTENSION IF NOT EXISTS pglogical",
             "CREATE TABLE rc_t (id int PRIMARY KEY, v text)",
             f"SELECT pglogical.create_node(node_name := '{name}',"
             f" dsn := '{libpq(cluster, i, db)}')")
    _sql(cluster, 0, db, "SELECT pglogical.replication_set_add_table('default', 'rc_t')")
    for i in (1, 2):
        _sql(cluster, i, db, f"SELECT pglogical.create_subscription("
             f"subscription_name := 'sub_{NODES[i]}_n1', provider_dsn := '{libpq(cluster, 0, db)}',"
             " synchronize_structure := false, synchronize_data := false,"
             " forward_origins := '{}')")
    wait_for("the pglogical subscriptions to replicate", lambda: all(
        _sql(cluster, i, db, "SELECT status FROM pglogical.show_subscription_status()")
        == [("replicating",)] for i in (1, 2)))


def _native(cluster: Any) -> None:
    from localauth import conninfo_grant, node_setup
    db = DB["native"]
    for i in range(len(NODES)):
        _sql(cluster, i, "postgres", f"CREATE DATABASE {db} OWNER {cluster.user}")
        # the grants of docs/security.md, in this database too (they are per database)
        _sql(cluster, i, db, *node_setup(cluster.user, db), conninfo_grant(cluster.user))
        _sql(cluster, i, db, "CREATE TABLE rc_t (id int PRIMARY KEY, v text)")
    _sql(cluster, 0, db, "CREATE PUBLICATION pub FOR TABLE rc_t")
    for i in (1, 2):
        _sql(cluster, i, db, f"CREATE SUBSCRIPTION sub_{NODES[i]}_n1 CONNECTION "
             f"'{libpq(cluster, 0, db)}' PUBLICATION pub WITH (copy_data = false)")
    wait_for("the native subscriptions to start", lambda: all(
        _sql(cluster, i, db, "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL"
             " AND relid IS NULL")[0][0] == 1 for i in (1, 2)))


def _rows(cluster: Any, i: int, db: str) -> dict[int, str]:
    return dict(_sql(cluster, i, db, "SELECT id, v FROM rc_t"))


def _disable_n2(cluster: Any, kind: str) -> None:
    db = DB[kind]
    if kind == "pglogical":
        _sql(cluster, 1, db, "SELECT pglogical.alter_subscription_disable('sub_n2_n1', true)")
        wait_for("n2's subscription to stop", lambda: _sql(
            cluster, 1, db, "SELECT status FROM pglogical.show_subscription_status()")
            == [("disabled",)])
    else:
        _sql(cluster, 1, db, "ALTER SUBSCRIPTION sub_n2_n1 DISABLE")
        wait_for("n2's subscription to stop", lambda: _sql(
            cluster, 1, db, "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL")
            == [(0,)])


@pytest.fixture(scope="module")
def failed(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The cluster right after n1 failed, with the moment (``until``) taken just then."""
    from localcluster import LocalCluster, free_ports
    from replication_setup import add_database
    cluster = LocalCluster(tmp_path_factory.mktemp("recov"), name=CLUSTER,
                           ports=free_ports(3, 17500, 17999), node_names=NODES,
                           server_settings=server_settings())
    cluster.start()
    try:
        add_database(cluster.write_cluster_json(cluster_dir()), DB["native"], cluster.user,
                     cluster.password)
        _pglogical(cluster)
        _native(cluster)
        for kind in KINDS:
            db = DB[kind]
            _sql(cluster, 0, db, "INSERT INTO rc_t SELECT g, 'v' || g FROM generate_series(1, 10) g")
            for i in (1, 2):
                wait_for(f"{kind} rows to reach {NODES[i]}",
                         lambda i=i, db=db: len(_rows(cluster, i, db)) == 10)
            _disable_n2(cluster, kind)
            # n1's last four changes, one transaction each: they reach n3 only
            _sql(cluster, 0, db, "INSERT INTO rc_t VALUES (11, 'new 11')")
            _sql(cluster, 0, db, "INSERT INTO rc_t VALUES (12, 'new 12')")
            _sql(cluster, 0, db, "UPDATE rc_t SET v = 'changed on n1' WHERE id = 3")
            _sql(cluster, 0, db, "DELETE FROM rc_t WHERE id = 5")
            wait_for(f"n1's changes to reach n3 ({kind})",
                     lambda db=db: _rows(cluster, 2, db) == _rows(cluster, 0, db))
            # each survivor's own change meanwhile
            _sql(cluster, 1, db, "INSERT INTO rc_t VALUES (100, 'local on n2')")
            _sql(cluster, 2, db, "INSERT INTO rc_t VALUES (200, 'local on n3')")
        until = _sql(cluster, 1, "acedb", "SELECT now()::text")[0][0]
        _serve_api_role(cluster)
        cluster.stop_node(0)
        _mark_inactive(cluster_dir() / CLUSTER / f"{CLUSTER}.json", "n1")
        yield cluster, until
    finally:
        cluster.stop()


def _serve_api_role(cluster: Any) -> None:
    """A caller of the API that may recover: docs/security.md's grants, in both databases."""
    cluster.serve_role(API_ROLE, repair=True)
    for i in range(len(NODES)):
        _sql(cluster, i, "postgres", f"GRANT pg_read_all_data, pg_write_all_data, "
             f"ace_preserve_origin TO {API_ROLE}")
        for db in DB.values():
            _sql(cluster, i, db,
                 f"GRANT SELECT ON pg_catalog.pg_replication_origin_status TO {API_ROLE}",
                 "GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() "
                 f"TO {API_ROLE}",
                 f"GRANT SELECT (subconninfo) ON pg_catalog.pg_subscription TO {API_ROLE}")


def _mark_inactive(path: Path, node: str) -> None:
    """docs/recovery.md: the failed node stays in the cluster file, marked inactive."""
    doc = json.loads(path.read_text())
    for group in doc["node_groups"]:
        if group.get("name") == node:
            group["is_active"] = False
    path.write_text(json.dumps(doc, indent=2))


def _origin_of(cluster: Any, i: int, db: str, ids: list[int]) -> dict[int, tuple[str, str]]:
    """Each row's origin name and commit time (UTC, microseconds), read as the superuser."""
    rows = _sql(cluster, i, db,
                "SELECT t.id, o.roname, to_char(c.\"timestamp\" AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD HH24:MI:SS.US') FROM rc_t t, "
                "LATERAL pg_xact_commit_timestamp_origin(t.xmin) c "
                "LEFT JOIN pg_replication_origin o ON o.roident = c.roident "
                f"WHERE t.id IN ({', '.join(map(str, ids))})")
    return {r[0]: (r[1], r[2]) for r in rows}


def _n2_origin_for_n1(cluster: Any, kind: str) -> str:
    db = DB[kind]
    if kind == "pglogical":
        return _sql(cluster, 1, db, "SELECT sub_slot_name FROM pglogical.subscription")[0][0]
    return "pg_" + str(_sql(cluster, 1, db, "SELECT oid FROM pg_subscription")[0][0])


def _diff(kind: str, *args: str) -> Any:
    return run_ace("table-diff", CLUSTER, TABLE, f"--dbname={DB[kind]}", *args)


def _keys(doc: dict[str, Any]) -> set[str]:
    return {r["id"] for sides in doc["diffs"].values() for rows in sides.values() for r in rows}


@pytest.fixture(scope="module")
def rec_fleet(failed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory.mktemp("recov-fleet"), ("rw1",), concurrency=2) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def rec_api(rec_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    certs = make_certs(tmp_path_factory.mktemp("recov-certs"))
    server = ApiServer(rec_fleet.env, certs, free_port(), rec_fleet.workdir / "api.log")
    server.start()
    yield server
    server.stop()


def _api(api: ApiServer, endpoint: str, **params: Any) -> dict[str, Any]:
    session = api.session(API_ROLE)
    response = session.post(api.url(endpoint), json={"cluster_name": CLUSTER,
                                                     "table_name": TABLE, **params}, timeout=10)
    assert response.status_code == 200, response.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"),
                            timeout=120)
    return doc


@pytest.fixture(scope="module")
def found(failed: Any, rec_fleet: Fleet, rec_api: ApiServer) -> dict[str, Any]:
    """Step 1 of docs/recovery.md: what n1 left behind; in this process, on the fleet (the
    CLI with a broker) and through the API."""
    _cluster, until = failed
    args = ("--nodes=n2,n3", "--against-origin=n1", f"--until={until}")
    out: dict[str, Any] = {kind: _diff(kind, *args) for kind in KINDS}
    for kind in KINDS:
        run = rec_fleet.ace("table-diff", CLUSTER, TABLE, f"--dbname={DB[kind]}", *args)
        out[f"{kind} fleet"] = AceRun(run.returncode, run.stdout, run.stderr)
        out[f"{kind} api"] = _api(rec_api, "/ace/table-diff", dbname=DB[kind], nodes="n2,n3",
                                  against_origin="n1", until=until)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("way", ["fleet", "api"])
def test_the_fleet_and_the_api_find_the_same_rows(found: dict[str, Any], kind: str,
                                                  way: str) -> None:
    if way == "fleet":
        run = found[f"{kind} fleet"]
        assert run.code == 1, (run.stdout, run.stderr)
        path = run.diff_path
    else:
        doc = found[f"{kind} api"]
        assert doc["status"] == "COMPLETED", doc.get("error")
        path = Path(doc["result"]["diff_file"])
    got = json.loads(Path(path).read_text())
    assert got["diffs"] == found[kind].diff()["diffs"]  # provenance included
    assert (got["summary"]["against_origin"], got["summary"]["until"]) == (
        "n1", found[kind].diff()["summary"]["until"])


@pytest.mark.parametrize("kind", KINDS)
def test_against_origin_reports_exactly_the_failed_nodes_last_changes(
        failed: Any, found: dict[str, Any], kind: str) -> None:
    cluster, until = failed
    run = found[kind]
    assert run.code == 1, (run.stdout, run.stderr)
    doc = run.diff()
    assert _keys(doc) == N1_KEYS  # n2's row 100 and n3's row 200 are not reported
    summary = doc["summary"]
    assert (summary["against_origin"], summary["nodes"]) == ("n1", ["n2", "n3"])
    assert summary["until"] is not None and "commit_ts_note" not in summary
    on_n3 = {r["id"]: r for r in doc["diffs"]["n2/n3"]["n3"]}
    assert set(on_n3) == {"3", "11", "12"}  # 5 was deleted on n1, so n3 has none
    truth = _origin_of(cluster, 2, DB[kind], [3, 11, 12])
    for key, row in on_n3.items():
        assert row["_ace_origin"] == "n1"
        assert row["_ace_commit_ts"] == truth[int(key)][1] + "+00"
        assert row["_ace_commit_ts"] <= summary["until"]
    on_n2 = {r["id"]: r for r in doc["diffs"]["n2/n3"]["n2"]}
    assert on_n2["5"]["_ace_origin"] == "n1"  # the row n1 deleted came from n1 too


@pytest.mark.parametrize("kind", KINDS)
def test_an_mtree_diff_against_the_failed_node_finds_what_table_diff_finds(
        failed: Any, found: dict[str, Any], kind: str, tmp_path: Path) -> None:
    """docs/recovery.md's step 1 on a table with a tree: the same rows, with the same
    provenance; the tree is gone afterwards, so the steps below see the table as it was."""
    from replication_setup import add_database
    cluster, until = failed
    admin_dir = tmp_path / "admin"
    add_database(cluster.write_cluster_json(admin_dir, admin=True), DB["native"], "postgres",
                 "")
    admin = {"ACE_CLUSTER_DIR": str(admin_dir)}  # rc_t is the superuser's: it builds the tree
    on = (f"--dbname={DB[kind]}", "--nodes=n2,n3")
    for env in (None, admin):  # the schema, then the event trigger
        init = run_ace("mtree", "init", CLUSTER, *on, env=env)
        assert init.code == 0, init.stdout + init.stderr
    try:
        build = run_ace("mtree", "build", CLUSTER, TABLE, *on, env=admin)
        assert build.code == 0, build.stdout + build.stderr
        run = run_ace("mtree", "table-diff", CLUSTER, TABLE, *on, "--against-origin=n1",
                      f"--until={until}")
        assert run.code == 1, run.stdout + run.stderr
        doc, expected = run.diff(), found[kind].diff()
        assert doc["diffs"] == expected["diffs"]  # provenance included
        assert (doc["summary"]["against_origin"], doc["summary"]["until"]) == (
            "n1", expected["summary"]["until"])
    finally:
        down = run_ace("mtree", "teardown", CLUSTER, TABLE, *on, env=admin)
        assert down.code == 0, down.stdout + down.stderr


def test_a_scheduled_diff_against_the_failed_node_finds_what_table_diff_finds(
        failed: Any, found: dict[str, Any], rec_fleet: Fleet) -> None:
    """A schedule_jobs entry with against_origin and until, as beat sends it to the fleet."""
    from ace_shared.tasks.store import COMPLETED, FAILED, TaskStore
    _cluster, until = failed
    send_as_beat(rec_fleet.env, "ace.scheduled_diff", [
        "recover_n1", {"cluster_name": CLUSTER, "table_name": TABLE, "dbname": DB["native"],
                       "nodes": "n2,n3", "against_origin": "n1", "until": until},
        "table-diff"])
    store = TaskStore(rec_fleet.env["ACE_DATABASE_URL"])

    def finished() -> Any:
        return next((r for r in store.recent(50) if r.requested_by == "scheduler:recover_n1"
                     and r.status in (COMPLETED, FAILED)), None)
    wait_for("the scheduled diff to finish", lambda: finished() is not None, timeout=90)
    record = finished()
    assert record.status == COMPLETED, record.error
    doc = json.loads(Path(record.result["diff_file"]).read_text())
    assert doc["diffs"] == found["native"].diff()["diffs"]
    assert doc["summary"]["against_origin"] == "n1"


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_diff_shows_the_survivors_own_changes_too(failed: Any, kind: str) -> None:
    run = _diff(kind, "--nodes=n2,n3")
    assert run.code == 1
    doc = run.diff()
    assert _keys(doc) == N1_KEYS | {"100", "200"}
    rows = {r["id"]: r for sides in doc["diffs"].values() for rs in sides.values() for r in rs}
    assert (rows["100"]["_ace_origin"], rows["200"]["_ace_origin"]) == ("n2", "n3")


@pytest.mark.parametrize("kind", KINDS)
def test_until_before_the_changes_reports_none_of_them(failed: Any, kind: str) -> None:
    run = _diff(kind, "--nodes=n2,n3", "--against-origin=n1", "--until=2000-01-01T00:00:00Z")
    assert run.code == 0, (run.stdout, run.stderr)


def test_the_csv_and_html_reports_show_commit_time_and_origin(failed: Any) -> None:
    _cluster, until = failed
    args = ("--nodes=n2,n3", "--against-origin=n1", f"--until={until}")
    csv_run, html_run = (_diff("native", *args, f"--output={fmt}") for fmt in ("csv", "html"))
    reports = []
    for run in (csv_run, html_run):
        assert run.code == 1, (run.stdout, run.stderr)
        line = next(ln for ln in run.stdout.splitlines() if ln.startswith("Report written to "))
        reports.append(Path(line.removeprefix("Report written to ")).read_text())
    lines = list(csv.reader(io.StringIO(reports[0])))
    assert lines[0][-2:] == ["commit_ts", "origin"]
    on_n3 = {ln[3]: ln for ln in lines[1:] if ln[1] == "n3" and ln[2] != "missing"}
    assert set(on_n3) == {"3", "11", "12"}
    assert {ln[-1] for ln in on_n3.values()} == {"n1"}
    assert all(ln[-2].endswith("+00") for ln in on_n3.values())
    assert reports[1].count('data-meta="_ace_origin"') == 4  # one line per key, n1 on a side
    assert "commit time" in reports[1]


def _repair_cmd(kind: str, diff_file: Path) -> list[str]:
    return ["table-repair", CLUSTER, TABLE, f"--diff-file={diff_file}", f"--dbname={DB[kind]}",
            "--recovery-mode", "--preserve-origin"]


def _wait_for_lock_wait(cluster: Any, db: str, proc: subprocess.Popen[str]) -> None:
    def waiting() -> bool:
        assert proc.poll() is None, proc.communicate()
        return _sql(cluster, 1, db, "SELECT count(*) FROM pg_stat_activity WHERE "
                    "wait_event_type = 'Lock' AND datname = current_database()")[0][0] >= 1
    wait_for("the repair to wait on the held row", waiting, timeout=60)


@pytest.fixture(scope="module")
def repaired(failed: Any, found: dict[str, Any], rec_fleet: Fleet,
             rec_api: ApiServer) -> dict[str, Any]:
    """Step 2 on both kinds: a first repair cut short by n2 stopping, then the same again,
    on the fleet (pglogical) or through the API (native)."""
    cluster, _ = failed
    out: dict[str, Any] = {}
    for kind in KINDS:
        db = DB[kind]
        before = {"n3": _origin_of(cluster, 2, db, [3, 11, 12])}
        # a transaction on n2 holds key 12, so the repair waits there; then n2 stops
        holder = psycopg2.connect(libpq(cluster, 1, db))
        with holder.cursor() as cur:
            cur.execute("INSERT INTO rc_t VALUES (12, 'held')")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ace_api", *_repair_cmd(kind, found[kind].diff_path)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "ACE_NO_PROGRESS": "1"})
        _wait_for_lock_wait(cluster, db, proc)
        cluster.stop_node(1)
        first = proc.communicate(timeout=120)
        holder.close()
        cluster.start_node(1)
        time.sleep(0.5)
        middle = _rows(cluster, 1, db)
        # run again to finish: pglogical's on the fleet, native's through the API
        if kind == "pglogical":
            run = rec_fleet.ace(*_repair_cmd(kind, found[kind].diff_path))
            again = (run.returncode == 0, run.stdout + run.stderr)
        else:
            # (the API's own diff of step 1, named by its task id)
            doc = _api(rec_api, "/ace/table-repair", dbname=db,
                       diff_file=found[f"{kind} api"]["task_id"], recovery_mode=True,
                       preserve_origin=True)
            again = (doc["status"] == "COMPLETED", json.dumps(doc))
        out[kind] = {"first": (proc.returncode, *first), "middle": middle, "again": again,
                     "before": before}
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_an_interrupted_repair_says_what_was_done_and_a_rerun_finishes(
        failed: Any, repaired: dict[str, Any], kind: str) -> None:
    code, stdout, stderr = repaired[kind]["first"]
    assert code == 2, (stdout, stderr)
    assert "were committed" in stderr and "run the same command again" in stderr, stderr
    middle = repaired[kind]["middle"]
    assert 5 not in middle and middle.get(11) == "new 11"  # done before n2 stopped
    assert 12 not in middle  # the held insert died with n2, and the repair's never came
    ok, text = repaired[kind]["again"]
    assert ok, text


@pytest.mark.parametrize("kind", KINDS)
def test_recovery_repair_picks_n3_and_keeps_n1_as_origin(
        failed: Any, repaired: dict[str, Any], kind: str) -> None:
    cluster, _ = failed
    db = DB[kind]
    _ok, text = repaired[kind]["again"]
    assert "repaired from n3" in text, text
    n2, n3 = _rows(cluster, 1, db), _rows(cluster, 2, db)
    assert {k: v for k, v in n2.items() if k != 100} == {k: v for k, v in n3.items() if k != 200}
    assert (n2[100], 200 in n2, n3[200], 100 in n3) == ("local on n2", False, "local on n3",
                                                        False)
    stamped = _origin_of(cluster, 1, db, [3, 11, 12])
    origin = _n2_origin_for_n1(cluster, kind)
    assert {k: v[0] for k, v in stamped.items()} == dict.fromkeys((3, 11, 12), origin)
    assert {k: v[1] for k, v in stamped.items()} == {
        k: v[1] for k, v in repaired[kind]["before"]["n3"].items()}


@pytest.mark.parametrize("kind", KINDS)
def test_after_reconciling_the_survivors_a_full_diff_is_clean(
        failed: Any, repaired: dict[str, Any], kind: str) -> None:
    left = _diff(kind, "--nodes=n2,n3")
    assert left.code == 1 and _keys(left.diff()) == {"100", "200"}
    both = run_ace("table-repair", CLUSTER, TABLE, f"--diff-file={left.diff_path}",
                   f"--dbname={DB[kind]}", "--bidirectional", "--insert-only")
    assert both.code == 0, (both.stdout, both.stderr)
    final = _diff(kind, "--nodes=n2,n3")
    assert final.code == 0, (final.stdout, final.stderr)


def test_recovery_mode_needs_an_against_origin_diff(failed: Any) -> None:
    plain = _diff("native", "--nodes=n2,n3")
    run = run_ace("table-repair", CLUSTER, TABLE, f"--diff-file={plain.diff_path}",
                  "--dbname=natdb", "--recovery-mode")
    assert run.code == 2
    assert "--against-origin" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_against_origin_must_name_a_node(failed: Any) -> None:
    run = _diff("native", "--nodes=n2,n3", "--against-origin=n9")
    assert run.code == 2 and "n9 is not a node" in run.stderr, run.stderr


def test_recovery_mode_leaves_alone_a_row_the_source_changed_itself(
        failed: Any, repaired: dict[str, Any]) -> None:
    """A row n1 wrote that n3 then changed locally: reported (n2's version came from n1),
    but its source version did not, so recovery mode does not copy it."""
    cluster, _ = failed
    _sql(cluster, 2, "natdb", "UPDATE rc_t SET v = 'n3 changed it' WHERE id = 7")
    found = _diff("native", "--nodes=n2,n3", "--against-origin=n1")
    assert found.code == 1 and _keys(found.diff()) == {"7"}
    run = run_ace(*_repair_cmd("native", found.diff_path))
    assert run.code == 0, (run.stdout, run.stderr)
    assert "left 1 row on n2 alone" in run.stdout, run.stdout
    assert _rows(cluster, 1, "natdb")[7] == "v7"
    _sql(cluster, 2, "natdb", "UPDATE rc_t SET v = 'v7' WHERE id = 7")
