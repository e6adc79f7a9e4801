"""Identity at the API: a certificate is worth its role, so only plain callers are served.

One ``ace api`` with no ``API_ALLOWED_CNS`` (every certificate the authority
signed reaches the API) serves the session's fleet. A certificate whose common
name is a superuser, a ``BYPASSRLS`` role, ACE's own login or a role outside
``ace_callers`` is refused with 403 before anything is queued, on submission,
task-status and diff-file endpoints alike; a plain member of ``ace_callers``
is served. A cluster with a node that cannot be reached refuses everyone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from api_helpers import ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from fleet_helpers import Fleet, free_port

from ace_shared.tasks.store import TaskStore

TABLE = "public.idn_secret"
PLAIN = "idn_plain"  # member of ace_callers, may read the table
SUPER = "idn_super"  # member of ace_callers, then made SUPERUSER
BYPASS = "idn_bypass"  # member of ace_callers, BYPASSRLS on one node only
STRANGER = "idn_stranger"  # a login role outside ace_callers
GONE = "idn_gone"  # a copy of testclus whose n3 is at a port nobody listens on


@pytest.fixture(scope="module")
def roles(pg_cluster: Any) -> None:
    for role in (PLAIN, SUPER, BYPASS):
        pg_cluster.serve_role(role)
    for i in range(3):
        run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                f"DROP TABLE IF EXISTS {TABLE}",
                f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v text)",
                f"INSERT INTO {TABLE} SELECT g, 'secret ' || g FROM generate_series(1, 50) g",
                f"REVOKE ALL ON {TABLE} FROM PUBLIC",
                f"GRANT SELECT ON {TABLE} TO {PLAIN}",
                f"ALTER ROLE {SUPER} SUPERUSER",
                f"DO $$ BEGIN CREATE ROLE {STRANGER} LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    run_sql(pg_cluster.admin_dsn(2, pg_cluster.dbname), f"ALTER ROLE {BYPASS} BYPASSRLS")


@pytest.fixture(scope="module")
def gone_cluster(pg_cluster: Any, fleet: Fleet) -> str:
    """``idn_gone``: testclus with n3 moved to a port nobody listens on."""
    cluster_dir = Path(fleet.env["ACE_CLUSTER_DIR"])
    doc = json.loads((cluster_dir / "testclus" / "testclus.json").read_text())
    doc["cluster_name"] = GONE
    doc["node_groups"][2]["port"] = str(free_port())
    (cluster_dir / GONE).mkdir(exist_ok=True)
    path = cluster_dir / GONE / f"{GONE}.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return GONE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    return make_certs(tmp_path_factory.mktemp("identity-certs"))


@pytest.fixture(scope="module")
def api(fleet: Fleet, pki: ApiCerts, roles: None) -> Iterator[ApiServer]:
    env = {k: v for k, v in fleet.env.items() if k != "ACE_API_ALLOWED_CNS"}
    server = ApiServer(env, pki, free_port(), fleet.workdir / "api-identity.log")
    server.start()
    yield server
    server.stop()


def _diff(api: ApiServer, cn: str, cluster: str = "testclus") -> requests.Response:
    return api.session(cn).post(api.url("/ace/table-diff"), timeout=30,
                                json={"cluster_name": cluster, "table_name": TABLE})


def _tasks_of(fleet: Fleet, cn: str) -> list[Any]:
    return [r for r in TaskStore(fleet.env["ACE_DATABASE_URL"]).recent(1000)
            if r.requested_by == cn]


@pytest.mark.parametrize("cn, said", [
    (SUPER, "SUPERUSER"),
    ("postgres", "SUPERUSER"),
    (BYPASS, "BYPASSRLS on node n3"),
    (STRANGER, "not a member of ace_callers"),
    ("idn_no_such_role", "not a member of ace_callers"),
    ("ace", "ACE's own login"),
])
def test_a_certificate_of_a_role_the_api_may_not_serve_is_refused_before_queueing(
        api: ApiServer, fleet: Fleet, cn: str, said: str) -> None:
    response = _diff(api, cn)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert said in error and cn in error and error.count(". ") == 0, error
    assert _tasks_of(fleet, cn) == []


def test_a_plain_member_of_ace_callers_is_served(api: ApiServer) -> None:
    session = api.session(PLAIN)
    response = _diff(api, PLAIN)
    assert response.status_code == 200, response.text
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")


def test_task_status_and_diff_files_refuse_a_role_the_api_may_not_serve(
        api: ApiServer, fleet: Fleet) -> None:
    """A task recorded for the role before it became powerful is no longer shown to it."""
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    task_id = "td_20240101_000000_idnsup"
    store.create(task_id, "table-diff", cluster_name="testclus", table_name=TABLE,
                 requested_by=SUPER, if_absent=True)
    session = api.session(SUPER)
    for answer in (session.get(api.url(f"/ace/task-status/{task_id}"), timeout=30),
                   session.get(api.url("/ace/task-status"), params={"task_id": task_id},
                               timeout=30),
                   session.post(api.url("/ace/table-rerun"), timeout=30,
                                json={"cluster_name": "testclus", "table_name": TABLE,
                                      "diff_file": task_id})):
        assert answer.status_code == 403, answer.text
        assert "SUPERUSER" in answer.json()["error"]
    assert [r.task_id for r in _tasks_of(fleet, SUPER)] == [task_id]


def test_a_node_that_cannot_answer_refuses_the_caller_without_naming_its_address(
        api: ApiServer, fleet: Fleet, gone_cluster: str) -> None:
    response = _diff(api, PLAIN, gone_cluster)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert "node n3" in error and "refused" in error, error
    assert "127.0.0.1" not in error and "port" not in error.lower(), error
    assert not [r for r in _tasks_of(fleet, PLAIN) if r.cluster_name == gone_cluster]


# --- a caller's login uses only the configured route, never libpq's defaults ----------------

PW_ROLE = "idn_pw"
PW = "idn-pw-secret"
LOGIN_AS = """
import sys
from ace_shared.config import load_settings
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import connect, node_targets
settings = load_settings()
cluster = load_cluster(settings.cluster_dir, "testclus")
target = node_targets(cluster, cluster.nodes[:1], None, settings, role=sys.argv[1])[0]
try:
    conn = connect(target)
except Exception as exc:
    print("REFUSED", type(exc).__name__)
else:
    with conn.cursor() as cur:
        cur.execute("SELECT session_user")
        print("LOGGED-IN", cur.fetchone()[0])
"""


def _login_in_process(env: dict[str, str], role: str) -> str:
    done = subprocess.run([sys.executable, "-c", LOGIN_AS, role], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pw_role(pg_cluster: Any) -> str:
    for i in range(3):
        run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                f"DO $$ BEGIN CREATE ROLE {PW_ROLE} LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                f"ALTER ROLE {PW_ROLE} PASSWORD '{PW}'")
    return PW_ROLE


@pytest.mark.parametrize("route", ["PGPASSFILE", "PGPASSWORD", "PGSERVICE"])
def test_a_callers_password_is_not_taken_from_the_workers_libpq_defaults(
        pg_cluster: Any, fleet: Fleet, pw_role: str, tmp_path: Path, route: str) -> None:
    """ROLE_PASSFILE unset, certificates off: a password the worker's environment holds
    for the caller (its own passfile, PGPASSWORD, a service file) must not log it in."""
    env = {k: v for k, v in fleet.env.items() if not k.startswith(("PG", "ACE_ROLE_PASSFILE"))}
    env.update(ACE_USE_CERT_AUTH="0", HOME=str(tmp_path))
    if route == "PGPASSFILE":
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"*:*:*:{pw_role}:{PW}\n")
        passfile.chmod(0o600)
        env["PGPASSFILE"] = str(passfile)
    elif route == "PGPASSWORD":
        env["PGPASSWORD"] = PW
    else:
        services = tmp_path / "pg_service.conf"
        services.write_text(f"[acesvc]\npassword={PW}\n")
        env.update(PGSERVICEFILE=str(services), PGSERVICE="acesvc")
    assert _login_in_process(env, pw_role).startswith("REFUSED")
    # the same password through the configured route works
    passfile = tmp_path / "role-passfile"
    passfile.write_text(f"*:*:*:{pw_role}:{PW}\n")
    passfile.chmod(0o600)
    configured = {k: v for k, v in env.items() if not k.startswith("PG")}
    assert _login_in_process({**configured, "ACE_ROLE_PASSFILE": str(passfile)}, pw_role) \
        == f"LOGGED-IN {pw_role}"


def test_a_callers_login_does_not_present_a_default_client_certificate(
        pg_cluster: Any, fleet: Fleet, tmp_path: Path) -> None:
    """Certificates off: ACE's certificate lying where libpq looks by default
    (~/.postgresql/postgresql.crt) must not log a served role in."""
    pg_cluster.serve_role(PLAIN)
    home = tmp_path / ".postgresql"
    home.mkdir()
    shutil.copy(pg_cluster.tls.client_cert, home / "postgresql.crt")
    shutil.copy(pg_cluster.tls.client_key, home / "postgresql.key")
    (home / "postgresql.key").chmod(0o600)
    env = {k: v for k, v in fleet.env.items() if not k.startswith(("PG", "ACE_ROLE_PASSFILE"))}
    env.update(ACE_USE_CERT_AUTH="0", HOME=str(tmp_path))
    assert _login_in_process(env, PLAIN).startswith("REFUSED")
    # the configured certificate route still works
    assert _login_in_process({**env, "ACE_USE_CERT_AUTH": "1"}, PLAIN) == f"LOGGED-IN {PLAIN}"


# --- revocation reaches connections already open ------------------------------------------------

KEEPER = "idn_keeper"


def test_a_revoked_certificate_is_refused_on_a_keep_alive_connection_within_seconds(
        fleet: Fleet, pki: ApiCerts) -> None:
    env = {**fleet.env, "ACE_CA_CRL_FILE": str(pki.ca.crl_file)}
    server = ApiServer(env, pki, free_port(), fleet.workdir / "api-revocation.log",
                       workers=1, threads=2)
    server.start()
    try:
        session = server.session(KEEPER)
        assert session.get(server.url("/ace/swagger.json"), timeout=10).status_code == 200
        pki.ca.revoke(pki.client(KEEPER).cert)
        with pytest.raises(requests.exceptions.SSLError, match="(?i)revoked"):
            server.session(KEEPER).get(server.url("/ace/swagger.json"), timeout=10)
        deadline = time.monotonic() + 5
        refused = None
        while refused is None and time.monotonic() < deadline:
            try:
                answer = session.get(server.url("/ace/swagger.json"), timeout=10)
            except requests.exceptions.SSLError as exc:  # the connection was closed
                assert "revoked" in str(exc).lower(), exc
                refused = "handshake"
            else:
                if answer.status_code != 200:
                    assert answer.status_code == 401, answer.text
                    assert "revoked" in answer.json()["error"], answer.text
                    refused = "request"
                time.sleep(0.2)
        assert refused, "the revoked certificate was still served on its open connection"
        # nor does any request after it on this connection, task-status polls included
        for path in ("/ace/swagger.json", "/ace/task-status/td_20240101_000000_keeper"):
            try:
                last = session.get(server.url(path), timeout=10)
            except requests.exceptions.SSLError as exc:
                assert "revoked" in str(exc).lower(), exc
            else:
                assert last.status_code == 401 and "revoked" in last.text, last.text
    finally:
        server.stop()
