"""Bad input meets a sentence, never a 500 or a traceback; what ACE writes stays private.

The API runs in-process (Flask's test client, the certificate handed over the
way gunicorn does); the CLI runs as the ``ace`` program against the session's
real PostgreSQL nodes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from client_helpers import api_client, as_caller
from flask.testing import FlaskClient

from ace_shared.config import Settings
from ace_shared.errors import ClusterError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.outputs import new_output_path
from ace_shared.tasks.store import TaskStore

REPO_ROOT = Path(__file__).resolve().parent.parent


def _cluster_doc(name: str, nodes: list[dict[str, Any]], password: str = "x"
                 ) -> dict[str, Any]:
    return {"cluster_name": name,
            "pgedge": {"databases": [{"db_name": "acedb", "db_user": "ace",
                                      "db_password": password}]},
            "node_groups": nodes}


def _write_cluster(cluster_dir: Path, doc: dict[str, Any]) -> None:
    folder = cluster_dir / doc["cluster_name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{doc['cluster_name']}.json").write_text(json.dumps(doc))


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    _write_cluster(tmp_path / "clusters", _cluster_doc(
        "lab", [{"name": f"n{i}", "public_ip": "127.0.0.1", "port": 1} for i in (1, 2)]))
    (tmp_path / "out").mkdir()
    # rate limits counted in this app alone: the default, the broker's Redis, is shared by
    # every test (and every run on this machine) within the limit's minute
    return Settings(CLUSTER_DIR=str(tmp_path / "clusters"), OUTPUT_DIR=str(tmp_path / "out"),
                    DATABASE_URL=f"sqlite:///{tmp_path / 'tasks.db'}",
                    API_RATE_LIMIT_STORAGE="memory://")


@pytest.fixture()
def client(settings: Settings) -> FlaskClient:
    return api_client(settings)


def _post(client: FlaskClient, path: str, body: bytes) -> Any:
    return client.post(path, data=body, content_type="application/json",
                       environ_base=as_caller())


# --- the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 1000, 100_000])
@pytest.mark.parametrize("path", ["/ace/table-diff", "/ace/update-spock-exception"])
def test_a_deeply_nested_body_is_a_400(client: FlaskClient, path: str, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = ('{"cluster_name": "lab", "table_name": "public.t", "dbname": ' + nested + "}"
            ).encode()
    response = _post(client, path, body)
    assert response.status_code == 400, response.json
    assert response.json == {"error": "The request body nests JSON deeper than 32 levels; "
                                      "send the parameters as a flat JSON object."}


def test_exception_details_nested_a_little_still_reach_the_checks(client: FlaskClient) -> None:
    details = {"remote_origin": 1, "remote_commit_ts": "2024-01-01T00:00:00Z",
               "remote_xid": 2, "status": "RESOLVED",
               "resolution_details": {"a": {"b": {"c": [1, 2, {"d": None}]}}}}
    response = _post(client, "/ace/update-spock-exception", json.dumps(
        {"cluster_name": "nosuch", "node_name": "n1", "exception_details": details}).encode())
    assert response.status_code == 404 and "nosuch" in response.json["error"]


def test_required_strings_are_documented_and_checked_as_non_empty(client: FlaskClient) -> None:
    doc = client.get("/ace/swagger.json", environ_base=as_caller()).json
    checked = 0
    for model in doc["definitions"].values():
        for name in model.get("required", ()):
            prop = model["properties"][name]
            if prop.get("type") == "string" and model.get("additionalProperties") is False:
                assert prop.get("minLength") == 1, (model, name)
                checked += 1
    assert checked >= 10
    query = {p["name"]: p for p in doc["paths"]["/table-diff"]["get"]["parameters"]}
    assert query["cluster_name"]["minLength"] == 1
    for body in ({"cluster_name": "", "table_name": "public.t"},
                 {"cluster_name": "lab", "table_name": ""}):
        response = _post(client, "/ace/table-diff", json.dumps(body).encode())
        empty = next(k for k, v in body.items() if v == "")
        assert response.status_code == 400
        assert response.json == {"error": f"{empty} must not be empty."}


# --- cluster files -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["n1/n2", "../n1", ".hidden", "n 1", "n1,n2", ""])
def test_node_names_in_a_cluster_file_are_checked_like_cluster_names(
        tmp_path: Path, bad: str) -> None:
    _write_cluster(tmp_path, _cluster_doc("lab", [
        {"name": "n1", "public_ip": "127.0.0.1"}, {"name": bad, "public_ip": "127.0.0.1"}]))
    with pytest.raises(ClusterError) as caught:
        load_cluster(tmp_path, "lab")
    assert f"has a node named {bad!r}" in str(caught.value)
    assert "letters, digits" in str(caught.value)


def test_a_bad_node_name_is_a_sentence_over_the_api(client: FlaskClient,
                                                    settings: Settings) -> None:
    _write_cluster(settings.cluster_dir, _cluster_doc("slashy", [
        {"name": "n1", "public_ip": "127.0.0.1"}, {"name": "a/b", "public_ip": "127.0.0.1"}]))
    response = _post(client, "/ace/table-diff",
                     b'{"cluster_name": "slashy", "table_name": "public.t"}')
    assert response.status_code == 404
    assert "has a node named 'a/b'" in response.json["error"]


@pytest.mark.parametrize(("path", "named"), [("/ace/table-diff", "table_name"),
                                             ("/ace/mtree/build", "table_name"),
                                             ("/ace/schema-diff", "schema_name")])
def test_a_cluster_name_too_long_for_a_file_name_is_a_sentence(client: FlaskClient, path: str,
                                                              named: str) -> None:
    """300 characters made the file system refuse the path (an OSError, a 500)."""
    body = {"cluster_name": "c" * 300, named: "public.t" if named == "table_name" else "public"}
    response = _post(client, path, json.dumps(body).encode())
    assert response.status_code == 400, response.json
    assert "at most 63" in response.json["error"] and "c" * 100 not in response.json["error"]


# --- files ACE writes --------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_claimed_output_files_and_new_task_stores_are_private(tmp_path: Path) -> None:
    path = new_output_path(tmp_path, "diffs", "diffs")
    assert _mode(path) == 0o600
    assert _mode(path.parent) == _mode(path.parent.parent) == 0o700
    TaskStore(f"sqlite:///{tmp_path / 'store.db'}").create(
        "td_20240101_000000_perm01", "table-diff", cluster_name="c", table_name="t",
        requested_by="x")
    for name in ("store.db", "store.db-wal", "store.db-shm"):
        if (tmp_path / name).exists():
            assert _mode(tmp_path / name) == 0o600, name


def _ace(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ace_api", *args], env=env, text=True,
                          capture_output=True, timeout=120)


def _cli_env(tmp_path: Path, cluster_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND", "ACE_DATABASE_URL")}
    env.update(ACE_CLUSTER_DIR=str(cluster_dir), ACE_OUTPUT_DIR=str(tmp_path / "out"),
               PYTHONPATH=str(REPO_ROOT), ACE_NO_PROGRESS="1")
    return env


def test_a_diff_and_its_report_are_readable_by_their_owner_only(
        pg_cluster: Any, tmp_path: Path) -> None:
    from api_helpers import run_sql

    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS private_items",
                "CREATE TABLE private_items (id int PRIMARY KEY, secret text)",
                "INSERT INTO private_items SELECT g, 'v' || g FROM generate_series(1, 50) g")
    run_sql(pg_cluster.node_dsn(1), "UPDATE private_items SET secret = 'x' WHERE id = 3")
    env = _cli_env(tmp_path, Path(os.environ["ACE_CLUSTER_DIR"]))
    done = _ace(["table-diff", "testclus", "public.private_items", "--output", "html"], env)
    assert done.returncode == 1, done.stderr
    out = tmp_path / "out"
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in written) and any(p.suffix == ".html"
                                                             for p in written), written
    for path in written:
        assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
    for folder in (p for p in out.rglob("*") if p.is_dir()):
        assert _mode(folder) & 0o077 == 0, (folder, oct(_mode(folder)))


# --- connection errors -------------------------------------------------------------------------


def test_a_wrong_password_says_the_login_was_refused(pg_cluster: Any, tmp_path: Path) -> None:
    cluster_dir = tmp_path / "clusters"
    nodes = [{"name": f"n{i + 1}", "public_ip": "127.0.0.1", "port": pg_cluster.ports[i]}
             for i in range(2)]
    doc = _cluster_doc("wrongpw", nodes, password="not-the-password")
    doc["pgedge"]["databases"][0].update(db_name=pg_cluster.dbname, db_user=pg_cluster.user)
    _write_cluster(cluster_dir, doc)
    done = _ace(["table-diff", "wrongpw", "public.private_items"], _cli_env(tmp_path,
                                                                             cluster_dir))
    assert done.returncode == 2
    assert "refused the login of user" in done.stderr, done.stderr
    assert "password" in done.stderr and "host and port" not in done.stderr
    assert "not-the-password" not in done.stderr and "Traceback" not in done.stderr


def test_a_node_that_is_not_there_says_check_the_host_and_port(tmp_path: Path) -> None:
    from fleet_helpers import free_port

    cluster_dir = tmp_path / "clusters"
    _write_cluster(cluster_dir, _cluster_doc("gone", [
        {"name": f"n{i}", "public_ip": "127.0.0.1", "port": free_port()} for i in (1, 2)]))
    done = _ace(["table-diff", "gone", "public.t"], _cli_env(tmp_path, cluster_dir))
    assert done.returncode == 2
    assert "cannot be reached" in done.stderr and "host and port" in done.stderr, done.stderr
