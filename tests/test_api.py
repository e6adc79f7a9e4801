"""The API application in-process: identity, error format, parameter checks, diff-file rules.

These run the Flask app through its test client. The client certificate is
what gunicorn would hand over: an object with ``getpeercert()`` in
``environ["gunicorn.socket"]``. Nothing here reaches the queue; the deployed
server with a fleet behind it is exercised in ``test_api_tls.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from client_helpers import PeerSocket, api_client, call, cert_for
from flask.testing import FlaskClient

from ace_api.rest.auth import common_name
from ace_api.rest.difffiles import resolve_diff_file
from ace_shared.autorepair.exception_status import parse_exception_update
from ace_shared.config import Settings
from ace_shared.errors import AceError, BadOptionError, DiffFileError, NotFoundError
from ace_shared.tasks.store import TaskStore

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    cluster_dir = tmp_path / "clusters" / "lab"
    cluster_dir.mkdir(parents=True)
    (cluster_dir / "lab.json").write_text(json.dumps({
        "cluster_name": "lab",
        "pgedge": {"databases": [{"db_name": "acedb", "db_user": "ace", "db_password": "x"}]},
        "node_groups": [{"name": f"n{i}", "public_ip": "127.0.0.1", "port": 1}
                        for i in (1, 2)],
    }))
    (tmp_path / "out").mkdir()
    # rate limits counted in this app alone: the default, the broker's Redis, is shared by
    # every test (and every run on this machine) within the limit's minute
    return Settings(CLUSTER_DIR=str(tmp_path / "clusters"), OUTPUT_DIR=str(tmp_path / "out"),
                    DATABASE_URL=f"sqlite:///{tmp_path / 'tasks.db'}",
                    API_RATE_LIMIT_STORAGE="memory://")


@pytest.fixture()
def client(settings: Settings) -> FlaskClient:
    return api_client(settings)


# --- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/ace/table-diff"), ("POST", "/ace/table-repair"), ("GET", "/ace/task-status/x"),
    ("POST", "/ace/update-spock-exception"), ("GET", "/ace/swagger.json"),
    ("GET", "/ace/nowhere"),
])
def test_without_a_verified_certificate_every_request_is_401(client: FlaskClient, method: str,
                                                             path: str) -> None:
    response = call(client, method, path, cn=None, json={})
    assert response.status_code == 401
    assert "client certificate" in response.json["error"]


def test_a_socket_without_tls_or_a_certificate_without_one_name_is_401(
        client: FlaskClient) -> None:
    plain = client.get("/ace/swagger.json", environ_base={"gunicorn.socket": object()})
    assert plain.status_code == 401
    for cert in ({}, cert_for(), cert_for("a", "b"), cert_for("  ")):
        response = client.get("/ace/swagger.json",
                              environ_base={"gunicorn.socket": PeerSocket(cert)})
        assert response.status_code == 401, cert


def test_no_header_or_environ_value_can_claim_an_identity(client: FlaskClient) -> None:
    response = client.get("/ace/swagger.json", headers={"ace.client_cn": "ace"},
                          environ_base={"ace.client_cn": "ace"})
    assert response.status_code == 401


def test_common_name_reads_the_subject_as_ssl_reports_it() -> None:
    assert common_name(cert_for("api_reader")) == "api_reader"
    assert common_name(None) is None and common_name({}) is None


# --- one error format --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", "/elsewhere", {}, 404),
    ("GET", "/ace/", {}, 404),
    ("PUT", "/ace/task-status", {}, 405),
    ("PATCH", "/ace/update-spock-exception", {}, 405),
    ("POST", "/ace/table-rerun", {"data": "x=1"}, 415),
    ("POST", "/ace/table-rerun", {"data": "[1,", "content_type": "application/json"}, 415),
    ("POST", "/ace/table-rerun", {"json": ["not", "an", "object"]}, 400),
    ("POST", "/ace/table-diff", {"data": "x" * (2 * 1024 * 1024),
                                 "content_type": "application/json"}, 413),
])
def test_framework_errors_come_as_one_error_field(client: FlaskClient, method: str, path: str,
                                                  kwargs: dict[str, Any], status: int) -> None:
    response = call(client, method, path, **kwargs)
    assert response.status_code == status
    if status >= 400:
        assert response.is_json and set(response.json) == {"error"}, response.data[:200]
        assert response.json["error"].endswith(".")


def test_405_says_which_methods_to_use(client: FlaskClient) -> None:
    response = call(client, "GET", "/ace/update-spock-exception")
    assert response.status_code == 405
    assert response.json["error"] == "/ace/update-spock-exception does not accept GET; use POST."
    assert "POST" in response.headers["Allow"]


def test_head_on_a_submission_endpoint_starts_nothing(client: FlaskClient) -> None:
    response = call(client, "HEAD", "/ace/table-diff?cluster_name=lab&table_name=public.t")
    assert response.status_code == 405 and response.headers["Allow"] == "GET, POST"


def test_a_real_fault_is_a_500_without_internals(client: FlaskClient,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: TaskStore, task_id: str, **_: object) -> None:
        raise RuntimeError("secret internals")
    monkeypatch.setattr(TaskStore, "get", broken)
    response = call(client, "GET", "/ace/task-status/td_20240315_123456_abcdef")
    assert response.status_code == 500
    assert response.json == {"error": "The API met an internal error (RuntimeError); the "
                                      "server log has the details."}


# --- the same checks for GET and POST ----------------------------------------------------------

DIFF_CASES = [
    ({"table_name": "public.t"}, 400, "cluster_name is required."),
    ({"cluster_name": "lab"}, 400, "table_name is required."),
    ({"cluster_name": "lab", "table_name": "t"}, 400, "schema-qualified"),
    ({"cluster_name": "lab", "table_name": "public.t", "block_rows": 999}, 400,
     "block_rows must be at least 1000 and at most 100000; got 999."),
    ({"cluster_name": "lab", "table_name": "public.t", "max_cpu_ratio": 0}, 400,
     "max_cpu_ratio must be greater than 0 and at most 1; got 0"),
    ({"cluster_name": "lab", "table_name": "public.t", "batch_size": 0}, 400, "batch_size"),
    ({"cluster_name": "lab", "table_name": "public.t", "output": "xml"}, 400,
     "output must be one of json, csv, html"),
    ({"cluster_name": "lab", "table_name": "public.t", "table_filter": "1=1; DROP TABLE t"},
     400, ""),
    ({"cluster_name": "lab", "table_name": "public.t", "nodes": "n1"}, 400,
     "At least two active nodes"),
    ({"cluster_name": "lab", "table_name": "public.t", "nodes": "n1,n7"}, 404, "Node n7"),
    ({"cluster_name": "lab", "table_name": "public.t", "dbname": "other"}, 404,
     "Database other is not in cluster lab"),
    ({"cluster_name": "elsewhere", "table_name": "public.t"}, 404,
     "Cluster elsewhere is not defined"),
    ({"cluster_name": "../lab", "table_name": "public.t"}, 400, "is not valid"),
    ({"cluster_name": "lab", "table_name": "public.t", "blockrows": 1000}, 400,
     "blockrows is not a parameter"),
]


@pytest.mark.parametrize(("params", "status", "fragment"), DIFF_CASES)
def test_diff_parameters_are_checked_alike_in_body_and_query(
        client: FlaskClient, params: dict[str, Any], status: int, fragment: str) -> None:
    posted = call(client, "POST", "/ace/table-diff", json=params)
    queried = call(client, "GET", "/ace/table-diff",
                   query_string={k: str(v) for k, v in params.items()})
    for response in (posted, queried):
        assert response.status_code == status, response.json
        assert fragment in response.json["error"]
    assert posted.json == queried.json


@pytest.mark.parametrize(("query", "fragment"), [
    ({"quiet": "yes please"}, "quiet must be true or false (or 1 or 0), not 'yes please'."),
    ({"block_rows": "lots"}, "block_rows must be a whole number, not 'lots'."),
    ({"max_cpu_ratio": "nan"}, "max_cpu_ratio must be a number, not 'nan'."),
])
def test_query_strings_are_read_as_the_documented_types(client: FlaskClient,
                                                        query: dict[str, str],
                                                        fragment: str) -> None:
    response = call(client, "GET", "/ace/table-diff",
                    query_string={"cluster_name": "lab", "table_name": "public.t", **query})
    assert response.status_code == 400 and response.json["error"] == fragment


def test_a_parameter_given_twice_in_the_query_is_refused(client: FlaskClient) -> None:
    response = call(client, "GET", "/ace/table-diff?cluster_name=lab&cluster_name=lab2"
                                   "&table_name=public.t")
    assert response.status_code == 400 and "given 2 times" in response.json["error"]


def test_json_null_means_not_given(client: FlaskClient) -> None:
    response = call(client, "POST", "/ace/table-diff", json={
        "cluster_name": "lab", "table_name": "public.t", "dbname": None, "block_rows": 5})
    assert response.json["error"].startswith("block_rows must be at least")


def test_repair_needs_its_source_unless_fixing_nulls(client: FlaskClient) -> None:
    response = call(client, "POST", "/ace/table-repair", json={
        "cluster_name": "lab", "table_name": "public.t", "diff_file": "nope.json"})
    assert response.status_code == 400
    assert "diff_file nope.json does not exist" in response.json["error"]
    response = call(client, "GET", "/ace/table-rerun", query_string={
        "cluster_name": "lab", "table_name": "public.t", "diff_file": "x.json",
        "behavior": "fast"})
    assert response.status_code == 400 and "behavior must be one of" in response.json["error"]


# --- task status -------------------------------------------------------------------------------


def test_task_status_answers_both_spellings_from_the_store(client: FlaskClient,
                                                          settings: Settings) -> None:
    store = TaskStore.from_settings(settings)
    store.create("td_20240315_123456_abcdef", "table-diff", cluster_name="lab",
                 table_name="public.t", requested_by="ace")
    running = call(client, "GET", "/ace/task-status?task_id=td_20240315_123456_abcdef").json
    assert running["status"] == running["task_status"] == "PENDING"
    store.mark_running("td_20240315_123456_abcdef", progress_total=4)
    store.set_progress("td_20240315_123456_abcdef", 1)
    running = call(client, "GET", "/ace/task-status/td_20240315_123456_abcdef").json
    assert running["status"] == "RUNNING" and running["progress"]["percent"] == 25.0
    outcome = {"diff_file": "/x.json", "total_rows": 10, "mismatched_rows": 2, "summary": {}}
    store.complete("td_20240315_123456_abcdef", outcome)
    done = call(client, "GET", "/ace/task-status/td_20240315_123456_abcdef").json
    assert done["status"] == done["task_status"] == "COMPLETED"
    assert done["result"] == done["task_context"] == outcome
    assert done["finished_at"].endswith("Z") and done["time_taken"] >= 0
    store.create("td_20240315_123456_failed", "table-diff", cluster_name="lab",
                 table_name="public.t", requested_by="ace")
    store.fail("td_20240315_123456_failed", "Node n2 cannot be reached.")
    failed = call(client, "GET", "/ace/task-status/td_20240315_123456_failed").json
    assert failed["status"] == "FAILED" and failed["error"] == "Node n2 cannot be reached."


# --- which diff files a caller may name --------------------------------------------------------


def test_diff_files_must_lie_in_the_output_dir(settings: Settings, tmp_path: Path) -> None:
    store = TaskStore.from_settings(settings)
    inside = settings.output_dir / "diffs" / "d.json"
    inside.parent.mkdir()
    inside.write_text("{}")
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    (settings.output_dir / "escape.json").symlink_to(outside)
    (settings.output_dir / "inner.json").symlink_to(inside)

    assert resolve_diff_file("diffs/d.json", settings, store) == str(inside)
    assert resolve_diff_file(str(inside), settings, store) == str(inside)
    assert resolve_diff_file("inner.json", settings, store) == str(inside)
    for bad, error in [(str(outside), BadOptionError), ("escape.json", BadOptionError),
                       ("diffs/../diffs/d.json", BadOptionError),
                       ("../secret.json", BadOptionError), ("/etc/passwd", BadOptionError),
                       ("diffs/missing.json", DiffFileError), ("a\x00b", BadOptionError),
                       ("x" * 5000, AceError)]:
        with pytest.raises(error):
            resolve_diff_file(bad, settings, store)


def test_a_diff_task_id_stands_for_its_diff_file_once_completed(settings: Settings) -> None:
    store = TaskStore.from_settings(settings)
    diff = settings.output_dir / "d.json"
    diff.write_text("{}")
    store.create("td_20240315_000000_aaaaaa", "table-diff", cluster_name="lab",
                 table_name="public.t", requested_by="x")
    with pytest.raises(BadOptionError, match="PENDING; wait until it is COMPLETED"):
        resolve_diff_file("td_20240315_000000_aaaaaa", settings, store)
    store.complete("td_20240315_000000_aaaaaa", {"diff_file": str(diff)})
    assert resolve_diff_file("td_20240315_000000_aaaaaa", settings, store) == str(diff)
    with pytest.raises(NotFoundError):
        resolve_diff_file("td_20240315_000000_bbbbbb", settings, store)
    store.create("tr_20240315_000000_cccccc", "table-repair", cluster_name="lab",
                 table_name="public.t", requested_by="x")
    with pytest.raises(BadOptionError, match="not a table-diff"):
        resolve_diff_file("tr_20240315_000000_cccccc", settings, store)


# --- Spock exception details -------------------------------------------------------------------


def test_exception_details_are_read_strictly() -> None:
    update = parse_exception_update({"remote_origin": "16385", "remote_xid": 99,
                                     "remote_commit_ts": "2024-03-15T18:04:56+05:30",
                                     "status": "resolved", "command_counter": 0})
    assert (update.remote_origin, update.remote_xid, update.status) == (16385, 99, "RESOLVED")
    assert update.remote_commit_ts.isoformat() == "2024-03-15T18:04:56+05:30"
    assert update.command_counter == 0
    naive = parse_exception_update({"remote_origin": 1, "remote_xid": 1, "status": "PENDING",
                                    "remote_commit_ts": "2024-03-15 12:34:56"})
    assert naive.remote_commit_ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    good = {"remote_origin": 1, "remote_xid": 1, "status": "PENDING",
            "remote_commit_ts": "2024-03-15T12:34:56Z"}
    for change, fragment in [({"remote_origin": "origin1"}, "remote_origin must be"),
                             ({"remote_origin": 2**32}, "remote_origin must be"),
                             ({"remote_xid": True}, "remote_xid must be"),
                             ({"remote_xid": -1}, "remote_xid must be"),
                             ({"status": "FIXED"}, "status must be one of"),
                             ({"remote_commit_ts": 5}, "remote_commit_ts must be"),
                             ({"command_counter": "x"}, "command_counter must be"),
                             ({"resolution_details": "done"}, "must be a JSON object"),
                             ({"status": None}, "status is required")]:
        with pytest.raises(BadOptionError, match=fragment):
            parse_exception_update({**good, **change})


# --- serving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "fragment"), [
    ({}, "set ACE_API_CERT_FILE or ACE_USER_CERT_FILE"),
    ({"ACE_API_CERT_FILE": "/nonexistent/server.crt"}, "fix ACE_API_CERT_FILE"),
])
def test_ace_api_refuses_to_start_without_tls_files(tmp_path: Path, env: dict[str, str],
                                                    fragment: str) -> None:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ACE_API_", "ACE_USER_", "ACE_CA_"))}
    result = subprocess.run([sys.executable, "-m", "ace_api", "api", "--port", "1"],
                            env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_ace_api_names_the_missing_authority(tmp_path: Path) -> None:
    from certs import Authority

    ca = Authority(tmp_path / "pki")
    server_cert, server_key = ca.issue_server(("127.0.0.1",))
    from ace_api.rest.server import gunicorn_options

    settings = Settings(ACE_API_CERT_FILE=str(server_cert), ACE_API_KEY_FILE=str(server_key))
    with pytest.raises(AceError, match=r"set CA_CERT_FILE \(ACE_CA_CERT_FILE"):
        gunicorn_options(settings, "127.0.0.1", 5000, 1)
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(AceError, match="cannot be loaded"):
        gunicorn_options(settings.with_overrides(CA_CERT_FILE=str(tmp_path / "ca.crt")),
                         "127.0.0.1", 5000, 1)
    (tmp_path / "ca.crt").write_bytes(ca.ca_file.read_bytes())
    options = gunicorn_options(settings.with_overrides(CA_CERT_FILE=str(tmp_path / "ca.crt")),
                               "127.0.0.1", 5000, 2, 1)
    import ssl

    assert options["cert_reqs"] == ssl.CERT_REQUIRED and options["worker_class"] == "sync"
    assert options["bind"] == "127.0.0.1:5000"


def test_cert_auth_settings_reach_every_node_connection(settings: Settings) -> None:
    from ace_shared.nodes.cluster import load_cluster
    from ace_shared.nodes.connection import node_targets

    cluster = load_cluster(settings.cluster_dir, "lab")
    secured = settings.with_overrides(USE_CERT_AUTH=True, ACE_USER_CERT_FILE="/c/ace.crt",
                                      ACE_USER_KEY_FILE="/c/ace.key", CA_CERT_FILE="/c/ca.crt")
    for target in node_targets(cluster, cluster.nodes, None, secured, role="api_reader"):
        kwargs = target.dsn_kwargs()
        assert (kwargs["sslmode"], kwargs["sslcert"], kwargs["sslkey"], kwargs["sslrootcert"]) \
            == ("verify-full", "/c/ace.crt", "/c/ace.key", "/c/ca.crt")
        assert target.role == "api_reader"
    plain = node_targets(cluster, cluster.nodes, None, settings)[0].dsn_kwargs()
    assert "sslcert" not in plain


def test_an_unreachable_broker_is_503_and_records_nothing(settings: Settings,
                                                          tmp_path: Path) -> None:
    """The Celery app takes its broker from the environment, so this runs in its own process."""
    script = (
        "import json, sys\n"
        "from ace_api.rest import create_app\n"
        "from ace_shared.config import Settings\n"
        "class Peer:\n"
        "    def getpeercert(self):\n"
        "        return {'subject': ((('commonName', 'ace'),),)}\n"
        "app = create_app(Settings(**json.loads(sys.argv[1])), lambda c, r: None).test_client()\n"
        "r = app.post('/ace/table-diff', json={'cluster_name': 'lab', 'table_name': 'public.t'},\n"
        "             environ_base={'gunicorn.socket': Peer()})\n"
        "print(r.status_code, json.dumps(r.get_json()))\n")
    fields = {k: getattr(settings, k) for k in ("CLUSTER_DIR", "OUTPUT_DIR", "DATABASE_URL")}
    fields["TASK_SIGNING_KEY"] = "k" * 64  # the API signs what it queues
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "ACE_BROKER_URL": "redis://:secret@127.0.0.1:1/0"}
    result = subprocess.run([sys.executable, "-c", script, json.dumps(fields)], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    assert json.loads(body) == {"error": "The task queue cannot be reached, so nothing was "
                                         "started; check that the ACE broker (Redis) is running, "
                                         "then try again."}
    assert TaskStore(settings.DATABASE_URL).recent(10) == []


def test_ace_api_refuses_to_start_without_a_signing_key(tmp_path: Path) -> None:
    """Every submission is signed for the workers: an API without the key would take
    requests it can only answer with an error, so it does not start."""
    from certs import Authority

    ca = Authority(tmp_path / "pki")
    server_cert, server_key = ca.issue_server(("127.0.0.1",))
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ACE_API_", "ACE_USER_", "ACE_CA_", "ACE_TASK_SIGNING"))}
    env = {**clean, "ACE_API_CERT_FILE": str(server_cert), "ACE_API_KEY_FILE": str(server_key),
           "ACE_CA_CERT_FILE": str(ca.ca_file), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "ace_api", "api", "--port", "1"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "signing key" in lines[0], result.stderr
