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
