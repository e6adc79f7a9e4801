"""The REST API as deployed: ``ace api`` (gunicorn, mutual TLS) with a real Redis and worker.

Every request goes over TLS with a client certificate from a test authority;
the certificate's common name is a PostgreSQL role on the test nodes, and the
tasks the API queues run as that role on a real Celery worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_helpers import (
    ApiCerts,
    ApiServer,
    make_certs,
    run_sql,
    wait_for_final,
)
from fleet_helpers import Fleet, free_port, own_fleet
from spock_fixtures import drop_spock, install_spock

from ace_shared.tasks.store import PENDING, TaskStore

TABLE = "api_items"
ROWS = 3000
CHANGED_ON_N2 = (10, 500, 1500, 2999)
MISSING_ON_N2 = 1234


@pytest.fixture(scope="module")
def api_fleet(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A Redis and one worker of its own, so this module's tasks meet no other test's."""
    with own_fleet(tmp_path_factory.mktemp("api-fleet"), ("api1",), concurrency=3) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    return make_certs(tmp_path_factory.mktemp("api-certs"))


@pytest.fixture(scope="module")
def api(api_fleet: Fleet, certs: ApiCerts) -> Iterator[ApiServer]:
    server = ApiServer(api_fleet.env, certs, free_port(), api_fleet.workdir / "api.log")
    server.start()
    yield server
    server.stop()
    assert "Using worker: gthread" in server.log.read_text()


@pytest.fixture(scope="module")
def roles(pg_cluster: Any) -> tuple[str, ...]:
    """Roles named by client certificates, which ACE's certificate may log in as."""
    names = ("api_reader", "api_norights", "api_admin")
    for name in names:
        pg_cluster.serve_role(name, repair=True)
    for i in range(3):  # api_admin may do anything to what ACE's user creates
        run_sql(pg_cluster.node_dsn(i),
                "ALTER DEFAULT PRIVILEGES FOR ROLE ace GRANT ALL ON TABLES TO api_admin",
                "ALTER DEFAULT PRIVILEGES FOR ROLE ace GRANT ALL ON SEQUENCES TO api_admin",
                "ALTER DEFAULT PRIVILEGES FOR ROLE ace GRANT USAGE ON SCHEMAS TO api_admin",
                "GRANT ALL ON ALL TABLES IN SCHEMA public TO api_admin",
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'spock') "
                "THEN GRANT USAGE ON SCHEMA spock TO api_admin; GRANT ALL ON ALL TABLES IN "
                "SCHEMA spock TO api_admin; END IF; END $$")
    return names


@pytest.fixture(scope="module")
def items(pg_cluster: Any, roles: tuple[str, ...]) -> str:
    """``public.api_items``: n2 differs in five rows; api_reader may read it, api_norights not."""
    for i in range(3):
        run_sql(
            pg_cluster.node_dsn(i),
            f"DROP TABLE IF EXISTS {TABLE}",
            f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text, amount numeric(10,2))",
            f"INSERT INTO {TABLE} SELECT g, 'item ' || g, g * 0.5 "
            f"FROM generate_series(1, {ROWS}) g",
            f"GRANT SELECT ON {TABLE} TO api_reader",
        )
    run_sql(pg_cluster.node_dsn(1),
            f"UPDATE {TABLE} SET label = 'changed' "
            f"WHERE id IN ({', '.join(map(str, CHANGED_ON_N2))})",
            f"DELETE FROM {TABLE} WHERE id = {MISSING_ON_N2}")
    return f"public.{TABLE}"


def _store(fleet: Fleet) -> TaskStore:
    return TaskStore(fleet.env["ACE_DATABASE_URL"])


def _bare_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


# --- who may connect ------------------------------------------------------------------------


def test_a_client_without_certificate_is_refused(api: ApiServer, certs: ApiCerts) -> None:
    with pytest.raises(requests.exceptions.SSLError, match="(?i)certificate"):
        _bare_session().get(api.url("/ace/swagger.json"), verify=str(certs.ca_file), timeout=10)


def test_a_certificate_from_another_authority_is_refused(api: ApiServer,
                                                         certs: ApiCerts) -> None:
    with pytest.raises(requests.exceptions.SSLError, match="(?i)unknown ca"):
        _bare_session().get(api.url("/ace/swagger.json"), verify=str(certs.ca_file),
                            cert=certs.other_ca_client.pair, timeout=10)


def test_an_expired_certificate_is_refused(api: ApiServer, certs: ApiCerts) -> None:
    with pytest.raises(requests.exceptions.SSLError, match="(?i)expired"):
        _bare_session().get(api.url("/ace/swagger.json"), verify=str(certs.ca_file),
                            cert=certs.expired_client.pair, timeout=10)


def test_a_valid_certificate_reads_the_openapi_document(api: ApiServer) -> None:
    response = api.session("api_reader").get(api.url("/ace/swagger.json"), timeout=10)
    assert response.status_code == 200
    doc = response.json()
    assert {"/table-diff", "/table-repair", "/table-rerun", "/task-status",
            "/task-status/{task_id}", "/update-spock-exception"} <= set(doc["paths"])
    diff_params = doc["definitions"]["TableDiffRequest"]["properties"]
    assert diff_params["block_rows"]["minimum"] == 1000
    assert api.session("api_reader").get(api.url("/ace/docs"), timeout=10).status_code == 200


def test_the_sync_worker_also_passes_the_certificate_name(
        api_fleet: Fleet, certs: ApiCerts, items: str) -> None:
    sync = ApiServer(api_fleet.env, certs, free_port(), api_fleet.workdir / "api-sync.log",
                     workers=1, threads=1)
    sync.start()
    try:
        response = sync.session("api_reader").post(sync.url("/ace/table-diff"), timeout=10, json={
            "cluster_name": "testclus", "table_name": items})
        assert response.status_code == 200, response.text
        record = _store(api_fleet).get(response.json()["task_id"])
        assert record is not None and record.requested_by == "api_reader"
    finally:
        sync.stop()
    assert "Using worker: sync" in (api_fleet.workdir / "api-sync.log").read_text()


def test_an_idle_connection_stays_open_between_polls(api: ApiServer, certs: ApiCerts) -> None:
    """A client polling every few seconds keeps one TLS connection (no handshake per poll,
    no race with the server closing it)."""
    import socket
    import ssl
    import time

    context = ssl.create_default_context(cafile=str(certs.ca_file))
    context.load_cert_chain(*certs.client("api_reader").pair)
    request = (b"GET /ace/task-status/td_20240101_000000_zzzzzz HTTP/1.1\r\n"
               b"Host: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        for pause in (0, 3):
            time.sleep(pause)
            tls.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(65536)
                assert chunk, "the server closed the idle connection"
                answer += chunk
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 404"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += tls.recv(65536)
            assert b"is not known" in body


# --- table-diff as the caller's role ---------------------------------------------------------


def test_diff_runs_as_the_certificate_role_and_reports_its_figures(
        api: ApiServer, api_fleet: Fleet, items: str) -> None:
    session = api.session("api_reader")
    response = session.post(api.url("/ace/table-diff"), timeout=10, json={
        "cluster_name": "testclus", "table_name": items, "block_rows": 1000})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["submitted_at"].endswith("Z")
    task_id = answer["task_id"]

    doc, seen = wait_for_final(session, api.url(f"/ace/task-status?task_id={task_id}"))
    assert seen[0] in ("PENDING", "RUNNING") and seen[-1] == "COMPLETED", (seen, doc)
    assert doc["task_status"] == doc["status"] == "COMPLETED"
    assert doc["requested_by"] == "api_reader"
    assert doc["task_type"] == "table-diff" and doc["time_taken"] >= 0
    for spelling in ("result", "task_context"):
        figures = doc[spelling]
        assert figures["total_rows"] == ROWS
        assert figures["mismatched_rows"] == len(CHANGED_ON_N2) + 1
        diff = json.loads(Path(figures["diff_file"]).read_text())
        assert diff["summary"]["task_id"] == task_id
    n1_n2 = diff["diffs"]["n1/n2"]
    assert sorted(int(r["id"]) for r in n1_n2["n1"]) == sorted([*CHANGED_ON_N2, MISSING_ON_N2])
    by_path = session.get(api.url(f"/ace/task-status/{task_id}"), timeout=10).json()
    assert by_path["result"] == doc["result"]
    record = _store(api_fleet).get(task_id)
    assert record is not None and record.options["role"] == "api_reader"


def test_a_role_without_select_gets_a_failed_task_saying_so(api: ApiServer, items: str) -> None:
    session = api.session("api_norights")
    response = session.post(api.url("/ace/table-diff"), timeout=10,
                            json={"cluster_name": "testclus", "table_name": items})
    assert response.status_code == 200, response.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
    assert doc["status"] == "FAILED"
    assert "permission denied" in doc["error"].lower(), doc["error"]
    assert doc["requested_by"] == "api_norights"


def test_a_certificate_naming_no_role_is_refused_at_submission(api: ApiServer, items: str
                                                                ) -> None:
    session = api.session("api_nobody")
    response = session.get(api.url("/ace/table-diff"), timeout=10,
                           params={"cluster_name": "testclus", "table_name": items})
    assert response.status_code == 403, response.text
    assert "api_nobody" in response.json()["error"]


def test_get_with_query_parameters_queues_the_same_diff(api: ApiServer, items: str) -> None:
    session = api.session("api_reader")
    response = session.get(api.url("/ace/table-diff"), timeout=10, params={
        "cluster_name": "testclus", "table_name": items, "block_rows": "1000",
        "nodes": "n1,n3", "quiet": "true", "max_cpu_ratio": "0.5", "batch_size": "2"})
    assert response.status_code == 200, response.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")
    summary = doc["result"]["summary"]
    assert summary["nodes"] == ["n1", "n3"] and summary["block_rows"] == 1000
    assert summary["batch_size"] == 2 and doc["result"]["mismatched_rows"] == 0


# --- errors over the wire ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "fragment"), [
    ("GET", "/ace/table-diff", {"params": {"table_name": "public.t"}}, 400,
     "cluster_name is required"),
    ("POST", "/ace/table-diff", {"json": {"table_name": "public.t"}}, 400,
     "cluster_name is required"),
    ("GET", "/ace/table-diff", {"params": {"cluster_name": "testclus", "table_name": "public.t",
                                           "block_rows": "10"}}, 400, "block_rows must be"),
    ("POST", "/ace/table-diff", {"json": {"cluster_name": "testclus", "table_name": "public.t",
                                          "block_rows": 10}}, 400, "block_rows must be"),
    ("GET", "/ace/table-diff", {"params": {"cluster_name": "testclus", "table_name": "public.t",
                                           "quiet": "perhaps"}}, 400, "quiet must be true"),
    ("POST", "/ace/table-diff", {"json": {"cluster_name": "testclus", "table_name": "public.t",
                                          "role": "postgres"}}, 400, "role is not a parameter"),
    ("POST", "/ace/table-diff", {"json": {"cluster_name": "nosuch", "table_name": "public.t"}},
     404, "Cluster nosuch is not defined"),
    ("GET", "/ace/table-diff", {"params": {"cluster_name": "testclus", "table_name": "public.t",
                                           "nodes": "n1,n9"}}, 404, "Node n9"),
    ("GET", "/ace/task-status", {"params": {"task_id": "td_20240101_000000_zzzzzz"}}, 404,
     "is not known"),
    ("GET", "/ace/task-status/td_20240101_000000_zzzzzz", {}, 404, "is not known"),
    ("GET", "/ace/task-status", {}, 400, "task_id is required"),
    ("GET", "/ace/no-such-endpoint", {}, 404, "no endpoint"),
    ("GET", "/ace/update-spock-exception", {}, 405, "use POST"),
    ("DELETE", "/ace/table-diff", {}, 405, "does not accept DELETE"),
    ("POST", "/ace/table-diff", {"data": "cluster_name=testclus",
                                 "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     415, "must be JSON"),
    ("POST", "/ace/table-repair", {"data": "{not json",
                                   "headers": {"Content-Type": "application/json"}},
     415, "not valid JSON"),
    ("POST", "/ace/update-spock-exception", {"data": b"\xff\xfe",
                                             "headers": {"Content-Type": "application/json"}},
     415, "not valid JSON"),
])
def test_errors_are_one_json_sentence_with_the_right_code(
        api: ApiServer, method: str, path: str, kwargs: dict[str, Any], status: int,
        fragment: str) -> None:
    response = api.session("api_reader").request(method, api.url(path), timeout=10, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and fragment in body["error"], body


# --- repair and rerun: only diff files from the output directory -----------------------------


@pytest.fixture(scope="module")
def completed_diff(api: ApiServer, items: str) -> dict[str, Any]:
    """A diff by api_reader: a caller may repair and rerun only from its own tasks."""
    session = api.session("api_reader")
    response = session.post(api.url("/ace/table-diff"), timeout=10,
                            json={"cluster_name": "testclus", "table_name": items})
    assert response.status_code == 200, response.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")
    return doc


@pytest.mark.parametrize("endpoint", ["/ace/table-repair", "/ace/table-rerun"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("refer_by", ["task_id", "relative_path"])
def test_repair_and_rerun_accept_a_diff_from_the_output_dir(
        api: ApiServer, api_fleet: Fleet, completed_diff: dict[str, Any], items: str,
        endpoint: str, method: str, refer_by: str) -> None:
    diff_file = Path(completed_diff["result"]["diff_file"])
    output_dir = Path(api_fleet.env["ACE_OUTPUT_DIR"]).resolve()
    named = (completed_diff["task_id"] if refer_by == "task_id"
             else str(diff_file.resolve().relative_to(output_dir)))
    params: dict[str, Any] = {"cluster_name": "testclus", "table_name": items,
                              "diff_file": named}
    if endpoint == "/ace/table-repair":
        params.update(source_of_truth="n1", dry_run=True)
    sent = ({"params": {k: str(v).lower() if isinstance(v, bool) else v
                        for k, v in params.items()}}
            if method == "GET" else {"json": params})
    response = api.session("api_reader").request(method, api.url(endpoint), timeout=10, **sent)
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    record = _store(api_fleet).get(task_id)
    assert record is not None and record.requested_by == "api_reader"
    assert record.task_type == endpoint.rsplit("/", 1)[1]
    assert record.options["diff_file"] == str(diff_file.resolve())
    assert record.options["role"] == "api_reader"
    if endpoint == "/ace/table-repair":
        assert record.options["dry_run"] is True and record.options["source_of_truth"] == "n1"
    assert record.status in (PENDING, "RUNNING", "COMPLETED", "FAILED")


def test_diff_repair_rerun_through_the_api_leaves_the_nodes_equal(api: ApiServer,
                                                                  pg_cluster: Any) -> None:
    """The whole round: a diff finds the rows, a repair from its task id fixes them, and a
    rerun of the first diff finds nothing left."""
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS api_fix",
                "CREATE TABLE api_fix (id int PRIMARY KEY, label text)",
                "INSERT INTO api_fix SELECT g, 'row ' || g FROM generate_series(1, 1500) g")
    run_sql(pg_cluster.node_dsn(2), "UPDATE api_fix SET label = 'drifted' WHERE id <= 3",
            "DELETE FROM api_fix WHERE id = 1000")
    session = api.session("api_admin")
    table = {"cluster_name": "testclus", "table_name": "public.api_fix"}

    def run(endpoint: str, **params: Any) -> dict[str, Any]:
        response = session.post(api.url(endpoint), json={**table, **params}, timeout=10)
        assert response.status_code == 200, response.text
        doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
        assert doc["status"] == "COMPLETED", doc.get("error")
        return doc

    diff = run("/ace/table-diff")
    assert diff["result"]["mismatched_rows"] == 4
    repair = run("/ace/table-repair", diff_file=diff["task_id"], source_of_truth="n1")
    assert repair["requested_by"] == "api_admin"
    rerun = run("/ace/table-rerun", diff_file=diff["task_id"])
    assert rerun["result"]["mismatched_rows"] == 0
    counts = {run_sql(pg_cluster.node_dsn(i), "SELECT count(*), sum(hashtext(label)) "
                                              "FROM api_fix")[0] for i in range(3)}
    assert len(counts) == 1


@pytest.mark.parametrize("endpoint", ["/ace/table-repair", "/ace/table-rerun"])
def test_repair_and_rerun_refuse_files_outside_the_output_dir(
        api: ApiServer, api_fleet: Fleet, completed_diff: dict[str, Any], items: str,
        tmp_path: Path, endpoint: str) -> None:
    output_dir = Path(api_fleet.env["ACE_OUTPUT_DIR"]).resolve()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(Path(completed_diff["result"]["diff_file"]).read_text())
    link = output_dir / f"link-{endpoint.rsplit('-', 1)[1]}.json"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    session = api.session("api_reader")
    for named, fragment in [(str(outside), "outside the ACE output directory"),
                            (f"diffs/../../{outside.name}", "'..'"),
                            (link.name, "outside the ACE output directory"),
                            ("/etc/passwd", "outside the ACE output directory"),
                            ("td_20240101_000000_zzzzzz", "is not known")]:
        response = session.post(api.url(endpoint), timeout=10, json={
            "cluster_name": "testclus", "table_name": items, "diff_file": named,
            "source_of_truth": "n1"} if endpoint.endswith("repair") else {
            "cluster_name": "testclus", "table_name": items, "diff_file": named})
        assert response.status_code in (400, 404), (named, response.text)
        assert fragment in response.json()["error"], (named, response.text)


# --- update-spock-exception --------------------------------------------------------------------

ORIGIN, XID, OTHER_XID = 46001, 123456, 777
COMMIT_TS = "2024-03-15 12:34:56.25+00"


@pytest.fixture(params=["5.x", "4.0"])
def spock_tables(request: pytest.FixtureRequest, pg_cluster: Any,
                 roles: tuple[str, ...]) -> Iterator[str]:
    """Spock's exception tables on n1 (current layout, and 4.0's without retry_errored_at),
    with one failed transaction of two commands and another one."""
    dsn = pg_cluster.node_dsn(0)
    install_spock(dsn, request.param, repair_mode=False)
    retry = request.param == "5.x"
    for xid, commit_ts in ((XID, COMMIT_TS), (OTHER_XID, "2024-03-16 00:00:00+00")):
        run_sql(dsn,
                "INSERT INTO spock.exception_status (remote_origin, remote_commit_ts, "
                f"{'retry_errored_at, ' if retry else ''}remote_xid, status) "
                f"VALUES (%(o)s, %(ts)s, {'%(ts)s, ' if retry else ''}%(x)s, 'PENDING')",
                "INSERT INTO spock.exception_status_detail (remote_origin, remote_commit_ts, "
                f"command_counter, {'retry_errored_at, ' if retry else ''}remote_xid, status) "
                f"SELECT %(o)s, %(ts)s, c, {'%(ts)s, ' if retry else ''}%(x)s, 'PENDING' "
                "FROM generate_series(1, 2) c",
                params={"o": ORIGIN, "ts": commit_ts, "x": xid})
    yield dsn
    drop_spock(dsn)


def _exception_rows(dsn: str) -> dict[tuple[int, int | None], tuple[Any, ...]]:
    rows = run_sql(dsn, "SELECT remote_xid, NULL::int, status, resolved_at IS NOT NULL, "
                        "resolution_details FROM spock.exception_status UNION ALL "
                        "SELECT remote_xid, command_counter, status, resolved_at IS NOT NULL, "
                        "resolution_details FROM spock.exception_status_detail")
    return {(r[0], r[1]): r[2:] for r in rows}


def _update(api: ApiServer, role: str, **details: Any) -> requests.Response:
    return api.session(role).post(api.url("/ace/update-spock-exception"), timeout=20, json={
        "cluster_name": "testclus", "node_name": "n1",
        "exception_details": {"remote_origin": str(ORIGIN),
                              "remote_commit_ts": "2024-03-15T18:04:56.25+05:30",
                              "remote_xid": str(XID), **details}})


def test_resolving_an_exception_updates_it_and_all_its_commands(
        api: ApiServer, spock_tables: str) -> None:
    response = _update(api, "api_admin", status="RESOLVED",
                       resolution_details={"details": "Issue fixed"})
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Exception status updated successfully"}
    rows = _exception_rows(spock_tables)
    for key in ((XID, None), (XID, 1), (XID, 2)):
        assert rows[key] == ("RESOLVED", True, {"details": "Issue fixed"}), key
    for key in ((OTHER_XID, None), (OTHER_XID, 1), (OTHER_XID, 2)):
        assert rows[key] == ("PENDING", False, None), key


def test_a_command_counter_updates_that_command_only(api: ApiServer, spock_tables: str) -> None:
    response = _update(api, "api_admin", status="UNRESOLVED", command_counter=2)
    assert response.status_code == 200, response.text
    rows = _exception_rows(spock_tables)
    assert rows[(XID, 2)] == ("UNRESOLVED", False, None)
    assert rows[(XID, 1)] == rows[(XID, None)] == ("PENDING", False, None)


def test_no_matching_exception_is_a_404_and_changes_nothing(
        api: ApiServer, spock_tables: str) -> None:
    before = _exception_rows(spock_tables)
    response = _update(api, "api_admin", status="RESOLVED", command_counter=9)
    assert response.status_code == 404, response.text
    assert "no Spock exception" in response.json()["error"]
    assert _exception_rows(spock_tables) == before


def test_a_role_without_rights_on_spock_may_not_update(api: ApiServer,
                                                      spock_tables: str) -> None:
    before = _exception_rows(spock_tables)
    response = _update(api, "api_norights", status="RESOLVED")
    assert response.status_code == 403, response.text
    assert "permission denied" in response.json()["error"].lower()
    assert _exception_rows(spock_tables) == before


def test_bad_exception_details_are_a_400(api: ApiServer, spock_tables: str) -> None:
    response = _update(api, "api_admin", status="DONE")
    assert response.status_code == 400
    assert "status must be one of" in response.json()["error"]
    response = _update(api, "api_admin", status="RESOLVED", remote_commit_ts="yesterday")
    assert response.status_code == 400
    assert "remote_commit_ts must be a timestamp" in response.json()["error"]


# --- schema-based fuzzing ----------------------------------------------------------------------


def _fuzz_strategy(schema: Any, mode: str) -> Any:
    """Requests generated from the OpenAPI document.

    ``positive`` fits the document, ``negative`` breaks it, and ``cluster`` fits it with
    the test cluster's name, so generated tables, filters and nodes get past the cluster
    check into the deeper validation (and, when valid, onto the queue).
    """
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    if mode != "cluster":
        return schema.as_strategy(generation_mode=GenerationMode(mode))
    fixed = {"cluster_name": "testclus"}
    return st.one_of(
        schema["/table-diff"]["GET"].as_strategy(query={**fixed, "table_name": f"public.{TABLE}"}),
        *(schema[path]["GET"].as_strategy(query=fixed) for path in ("/table-repair",
                                                                     "/table-rerun")))


@pytest.mark.parametrize(("mode", "examples"), [("positive", 60), ("negative", 60),
                                                ("cluster", 40)])
def test_fuzzing_the_openapi_document_finds_no_server_error(api: ApiServer, mode: str,
                                                            examples: int) -> None:
    """Whatever the generated request, the API answers below 500 and every error is
    ``{"error": ...}``."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error

    session = api.session("api_reader")
    schema = schemathesis.openapi.from_dict(
        session.get(api.url("/ace/swagger.json"), timeout=10).json())
    statuses: list[int] = []

    @given(case=_fuzz_strategy(schema, mode))
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def exercise(case: Any) -> None:
        response = case.call(session=session, base_url=api.url("/ace"), timeout=20,
                             verify=session.verify, cert=session.cert)
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"].strip(), body

    exercise()
    assert len(statuses) >= examples // 2 and max(statuses) < 500
