"""Who sees what through the API, with real certificates from ``deploy/certs.py``.

One ``ace api`` (gunicorn, mutual TLS) serves the session's fleet with an
admin list, an allow-list and a revocation list. Each caller sees, and may
repair or rerun from, only the tasks it submitted; another caller's task is
answered exactly like one that does not exist.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_helpers import REPO_ROOT, ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from fleet_helpers import Fleet, free_port

from ace_api.rest.access import AccessPolicy, names_setting
from ace_shared.config import load_settings
from ace_shared.tasks.store import TaskStore

TABLE = "access_items"
ADMIN = "access_boss"
USERS = ("access_alice", "access_bob", "access_carol")
ALICE, BOB, CAROL = USERS
OUTSIDER = "access_outsider"
REVOKED = "access_revoked"
UNKNOWN_ID = "td_20240101_000000_qqqqqq"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    pki = make_certs(tmp_path_factory.mktemp("access-certs"))
    pki.ca.revoke(pki.client(REVOKED).cert)
    return pki


@pytest.fixture(scope="module")
def api(fleet: Fleet, pki: ApiCerts) -> Iterator[ApiServer]:
    env = {**fleet.env, "ACE_API_ADMIN_CNS": ADMIN,
           "ACE_API_ALLOWED_CNS": f"ace,{','.join(USERS)}, {REVOKED}",
           "ACE_CA_CRL_FILE": str(pki.ca.crl_file)}
    server = ApiServer(env, pki, free_port(), fleet.workdir / "api-access.log")
    server.start()
    yield server
    server.stop()


def _serve_role(pg_cluster: Any, name: str) -> None:
    """Make ``name`` a role the work of its certificate can run as.

    Where the test cluster lets ACE's certificate log in as a caller's role
    (``serve_role``), that; otherwise a role granted to ACE's user.
    """
    if hasattr(pg_cluster, "serve_role"):
        pg_cluster.serve_role(name, repair=True)
        return
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), f"DO $$ BEGIN CREATE ROLE {name} NOLOGIN; "
                                        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                f"GRANT {name} TO ace")


@pytest.fixture(scope="module")
def table(pg_cluster: Any) -> str:
    """``public.access_items`` readable by every test caller's role; n2 differs in a row."""
    for name in (ADMIN, *USERS):
        _serve_role(pg_cluster, name)
    for i in range(3):
        dsn = pg_cluster.node_dsn(i)
        run_sql(dsn, f"DROP TABLE IF EXISTS {TABLE}",
                f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text)",
                f"INSERT INTO {TABLE} SELECT g, 'item ' || g FROM generate_series(1, 200) g",
                f"GRANT SELECT ON {TABLE} TO {', '.join((ADMIN, *USERS))}")
    run_sql(pg_cluster.node_dsn(1), f"UPDATE {TABLE} SET label = 'drift' WHERE id = 7")
    return f"public.{TABLE}"


@pytest.fixture(scope="module")
def alice_diff(api: ApiServer, table: str) -> dict[str, Any]:
    session = api.session(ALICE)
    response = session.post(api.url("/ace/table-diff"), timeout=10,
                            json={"cluster_name": "testclus", "table_name": table})
    assert response.status_code == 200, response.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")
    return doc


def _status(api: ApiServer, cn: str, task_id: str) -> requests.Response:
    return api.session(cn).get(api.url(f"/ace/task-status/{task_id}"), timeout=10)


def _as_unknown(response: requests.Response, task_id: str) -> tuple[int, str]:
    """The answer with the task id replaced, to compare with the answer for an unknown id."""
    return response.status_code, response.text.replace(task_id, UNKNOWN_ID)


# --- task-status ---------------------------------------------------------------------------


def test_a_caller_sees_its_own_task_and_another_caller_cannot_tell_it_exists(
        api: ApiServer, alice_diff: dict[str, Any]) -> None:
    task_id = alice_diff["task_id"]
    assert _status(api, ALICE, task_id).json()["requested_by"] == ALICE
    unknown = _status(api, BOB, UNKNOWN_ID)
    assert unknown.status_code == 404 and "is not known" in unknown.json()["error"]
    for answer in (_status(api, BOB, task_id),
                   api.session(BOB).get(api.url("/ace/task-status"), timeout=10,
                                        params={"task_id": task_id})):
        assert _as_unknown(answer, task_id) == (unknown.status_code, unknown.text)


def test_admins_see_every_task_and_only_admins_see_scheduled_ones(
        api: ApiServer, fleet: Fleet, alice_diff: dict[str, Any]) -> None:
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    scheduled = "td_20240101_000000_sched1"
    store.create(scheduled, "table-diff", cluster_name="testclus", table_name="public.t",
                 requested_by="scheduler:nightly", if_absent=True)
    assert _status(api, ADMIN, alice_diff["task_id"]).json()["requested_by"] == ALICE
    assert _status(api, ADMIN, scheduled).json()["status"] == "PENDING"
    for cn in (ALICE, "ace"):
        assert _as_unknown(_status(api, cn, scheduled), scheduled) == \
            _as_unknown(_status(api, cn, UNKNOWN_ID), UNKNOWN_ID)


def test_answered_polls_leave_no_access_log_line_and_refused_ones_do(
        api: ApiServer, alice_diff: dict[str, Any]) -> None:
    task_id = alice_diff["task_id"]
    before = api.log.read_text(errors="replace")
    session = api.session(ALICE)
    for _ in range(20):
        assert session.get(api.url(f"/ace/task-status/{task_id}"), timeout=10).ok
        assert session.get(api.url("/ace/task-status"), params={"task_id": task_id},
                           timeout=10).ok
    assert _status(api, BOB, task_id).status_code == 404
    outsider = _status(api, OUTSIDER, task_id)
    assert outsider.status_code == 403 and "API_ALLOWED_CNS" in outsider.json()["error"]

    def logged() -> list[str]:
        # this task's lines only: an earlier test's last line can reach the log (written by
        # another worker process, after its answer) once this test has begun
        return [line for line in api.log.read_text(errors="replace")[len(before):].splitlines()
                if "task-status" in line and task_id in line]
    deadline = time.monotonic() + 10  # written just after each answer
    while time.monotonic() < deadline and not (
            any(" 404 " in line for line in logged()) and any(" 403 " in line for line in logged())):
        time.sleep(0.1)
    time.sleep(0.5)
    lines = logged()
    assert len(lines) == 2, lines
    assert {" 404 " in line for line in lines} == {True, False}


# --- repair and rerun ----------------------------------------------------------------------


def _submit(api: ApiServer, cn: str, endpoint: str, table: str, diff_file: str
            ) -> requests.Response:
    body = {"cluster_name": "testclus", "table_name": table, "diff_file": diff_file}
    if endpoint == "/ace/table-repair":
        body.update(source_of_truth="n1", dry_run=True)
    return api.session(cn).post(api.url(endpoint), json=body, timeout=10)


@pytest.mark.parametrize("endpoint", ["/ace/table-repair", "/ace/table-rerun"])
def test_repair_and_rerun_work_only_from_the_callers_own_diffs(
        api: ApiServer, fleet: Fleet, alice_diff: dict[str, Any], table: str,
        endpoint: str) -> None:
    task_id = alice_diff["task_id"]
    path = Path(alice_diff["result"]["diff_file"])
    relative = str(path.resolve().relative_to(Path(fleet.env["ACE_OUTPUT_DIR"]).resolve()))
    missing = relative.replace(".json", "_nosuch.json")

    by_id = _submit(api, BOB, endpoint, table, task_id)
    assert by_id.status_code == 404, by_id.text
    assert _as_unknown(by_id, task_id) == _as_unknown(
        _submit(api, BOB, endpoint, table, UNKNOWN_ID), UNKNOWN_ID)
    for named in (relative, str(path)):
        by_path = _submit(api, BOB, endpoint, table, named)
        no_file = _submit(api, BOB, endpoint, table, missing)
        assert by_path.status_code == no_file.status_code == 400, by_path.text
        assert by_path.json()["error"].replace(named, missing) == no_file.json()["error"]

    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    for cn, named in ((ALICE, task_id), (ALICE, relative), (ADMIN, task_id),
                      (ADMIN, relative)):
        accepted = _submit(api, cn, endpoint, table, named)
        assert accepted.status_code == 200, (cn, named, accepted.text)
        record = store.get(accepted.json()["task_id"])
        assert record is not None and record.requested_by == cn
        assert record.options["diff_file"] == str(path.resolve())


# --- who may connect -----------------------------------------------------------------------


def test_a_certificate_missing_from_the_allow_list_is_refused(api: ApiServer) -> None:
    for path in ("/ace/swagger.json", f"/ace/task-status/{UNKNOWN_ID}"):
        response = api.session(OUTSIDER).get(api.url(path), timeout=10)
        assert response.status_code == 403, response.text
        assert OUTSIDER in response.json()["error"]
        assert "API_ALLOWED_CNS" in response.json()["error"]
    assert api.session(ADMIN).get(api.url("/ace/swagger.json"), timeout=10).status_code == 200


def test_a_revoked_certificate_is_refused(api: ApiServer) -> None:
    with pytest.raises(requests.exceptions.SSLError, match="(?i)revoked"):
        api.session(REVOKED).get(api.url("/ace/swagger.json"), timeout=10)


def test_a_revocation_applies_to_the_next_connection_without_a_restart(
        api: ApiServer, pki: ApiCerts) -> None:
    assert api.session(CAROL).get(api.url("/ace/swagger.json"), timeout=10).status_code == 200
    pki.ca.revoke(pki.client(CAROL).cert)
    with pytest.raises(requests.exceptions.SSLError, match="(?i)revoked"):
        api.session(CAROL).get(api.url("/ace/swagger.json"), timeout=10)
    assert api.session(ALICE).get(api.url("/ace/swagger.json"), timeout=10).status_code == 200


def test_the_api_refuses_to_start_with_an_unreadable_revocation_list(
        fleet: Fleet, pki: ApiCerts, tmp_path: Path) -> None:
    bad = tmp_path / "bad.crl"
    bad.write_text("not a CRL\n")
    env = {**fleet.env, "ACE_API_CERT_FILE": str(pki.server_cert),
           "ACE_API_KEY_FILE": str(pki.server_key), "ACE_CA_CERT_FILE": str(pki.ca_file),
           "ACE_CA_CRL_FILE": str(bad), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "ace_api", "api", "--port", str(free_port())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "CA_CRL_FILE" in done.stderr and "Traceback" not in done.stderr


# --- settings and the certificate script -----------------------------------------------------


def test_name_lists_come_from_the_environment_or_the_config_file(tmp_path: Path) -> None:
    assert names_setting(" a, b c,,") == {"a", "b", "c"}
    settings = load_settings(environ={"ACE_API_ADMIN_CNS": "root, ops"})
    policy = AccessPolicy.from_settings(settings)
    assert policy.admins == {"root", "ops"} and policy.may_call("anyone")
    config = tmp_path / "ace_config.py"
    config.write_text('API_ALLOWED_CNS = ["x", "y"]\n')
    policy = AccessPolicy.from_settings(load_settings(config, environ={}))
    assert policy.allowed == {"x", "y"} and not policy.may_call("z")
    assert not policy.may_see("x", "scheduler:nightly") and policy.may_see("x", "x")


def test_certs_script_makes_a_ca_server_and_role_certificates(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    script = [sys.executable, str(REPO_ROOT / "deploy" / "certs.py"), "--dir", str(folder)]
    done = subprocess.run([*script, "ace", "app_reader"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    names = {p.name for p in folder.iterdir()}
    assert {"ca.crt", "ca.key", "ca.crl", "server.crt", "server.key", "ace.crt", "ace.key",
            "app_reader.crt", "app_reader.key"} <= names
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key in folder.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    ca_before = (folder / "ca.crt").read_bytes()
    again = subprocess.run([*script, "other"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and (folder / "ca.crt").read_bytes() == ca_before
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "ca.crt"),
                             str(folder / "other.crt"), str(folder / "server.crt")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    bad = subprocess.run([*script, "no/slash"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not usable as a common name" in bad.stderr
