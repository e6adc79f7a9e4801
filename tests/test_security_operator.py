"""The operator path needs no superuser: the cluster file's login is an ordinary role.

The CLI, scheduled jobs and auto-repair log in as the cluster file's ``db_user``.
If that login were a superuser, any mistake that let a table owner's code run
in one of its sessions would reach the operating system (``COPY ... TO
PROGRAM``). The demo and test clusters therefore give it only predefined roles
and the repair grants (docs/security.md, "Deploying without a superuser"), and
the everyday commands must still work with it on tables that someone else owns.
The files holding its password are readable by their owner only.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from diff_helpers import (
    CLUSTER,
    NODES,
    as_admin_on_every_node,
    execute,
    mtree_init,
    on_every_node,
    query,
    run_ace,
)
from localcluster import LocalCluster
from spock_fixtures import drop_spock, install_spock_mesh

OWNER = "op_app_owner"  # owns the application's tables; ACE's login is not it
TABLE = "public.op_owned"
SYNCED = "public.op_owned_synced"
SCHEMA = "op_app"


def _cluster_login(cluster: Any) -> dict[str, str]:
    """``db_user`` and ``db_password`` of the cluster file ACE reads."""
    path = Path(os.environ["ACE_CLUSTER_DIR"]) / CLUSTER / f"{CLUSTER}.json"
    db = json.loads(path.read_text())["pgedge"]["databases"][0]
    return {"user": db["db_user"], "password": db["db_password"]}


def _login_dsn(cluster: Any, i: int) -> str:
    login = _cluster_login(cluster)
    return (f"host=127.0.0.1 port={cluster.nodes[i].port} dbname={cluster.dbname} "
            f"user={login['user']} password={login['password']}")


def test_the_cluster_files_login_has_no_superuser_like_attribute(pg_cluster: Any) -> None:
    user = _cluster_login(pg_cluster)["user"]
    for i in range(len(NODES)):
        rows = query(pg_cluster.admin_dsn(i), "SELECT rolsuper, rolcreaterole, rolcreatedb, "
                     "rolreplication, rolbypassrls FROM pg_roles WHERE rolname = %s", (user,))
        assert rows == [(False, False, False, False, False)], (NODES[i], rows)


def test_the_cluster_files_login_cannot_reach_the_operating_system(pg_cluster: Any) -> None:
    """What a table owner's code would try first in a superuser's session."""
    for i in range(len(NODES)):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            execute(_login_dsn(pg_cluster, i), ["COPY (SELECT 1) TO PROGRAM 'true'"])
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            execute(_login_dsn(pg_cluster, i), ["SELECT pg_read_file('PG_VERSION')"])


@pytest.fixture(scope="module")
def owned(pg_cluster: Any) -> Any:
    """A table and a schema owned by another role, as an application's are."""
    as_admin_on_every_node(pg_cluster, [
        f"DROP TABLE IF EXISTS {TABLE}", f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"DO $$ BEGIN CREATE ROLE {OWNER} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text NOT NULL)",
        f"INSERT INTO {TABLE} SELECT g, 'v' || g FROM generate_series(1, 3000) g",
        f"ALTER TABLE {TABLE} OWNER TO {OWNER}",
        f"CREATE SCHEMA {SCHEMA} AUTHORIZATION {OWNER}",
        f"CREATE TABLE {SCHEMA}.t (id int PRIMARY KEY, v text)",
        f"ALTER TABLE {SCHEMA}.t OWNER TO {OWNER}",
    ])
    execute(pg_cluster.admin_dsn(1, pg_cluster.dbname), [
        f"UPDATE {TABLE} SET label = 'drift' WHERE id IN (7, 2500)",
        f"DELETE FROM {TABLE} WHERE id = 1200",
        f"ALTER TABLE {SCHEMA}.t ADD COLUMN extra int"])
    yield pg_cluster
    as_admin_on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {TABLE}",
                                        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"])


def test_diff_repair_and_rerun_work_on_a_table_the_login_does_not_own(owned: Any) -> None:
    diff = run_ace("table-diff", CLUSTER, TABLE)
    assert diff.code == 1, diff.stdout + diff.stderr
    assert set(diff.diff()["diffs"]) == {"n1/n2", "n2/n3"}
    diff_file = diff.diff_path
    repair = run_ace("table-repair", CLUSTER, TABLE, f"--diff-file={diff_file}",
                     "--source-of-truth=n1")
    assert repair.code == 0, repair.stdout + repair.stderr
    rerun = run_ace("table-rerun", CLUSTER, TABLE, f"--diff-file={diff_file}")
    assert rerun.code == 0, rerun.stdout + rerun.stderr
    assert run_ace("table-diff", CLUSTER, TABLE).code == 0
    # the repair's writes ran as ACE's login, not as the owner and not as a superuser
    assert query(owned.admin_dsn(1, owned.dbname),
                 f"SELECT label FROM {TABLE} WHERE id = 7") == [("v7",)]


def test_the_cluster_checks_work_with_the_login(owned: Any) -> None:
    schema = run_ace("schema-diff", CLUSTER, SCHEMA)
    assert schema.code == 1, schema.stdout + schema.stderr
    assert "extra" in schema.stdout
    # Spock's catalogue belongs to its superuser; the login reads it through pg_read_all_data
    # a table of the owner's, alike on every node (the fixture's drifts, whatever ran before)
    as_admin_on_every_node(owned, [
        f"DROP TABLE IF EXISTS {SYNCED}",
        f"CREATE TABLE {SYNCED} (id int PRIMARY KEY, label text NOT NULL)",
        f"INSERT INTO {SYNCED} SELECT g, 'v' || g FROM generate_series(1, 500) g",
        f"ALTER TABLE {SYNCED} OWNER TO {OWNER}"])
    dsns = [owned.admin_dsn(i, owned.dbname) for i in range(len(NODES))]
    install_spock_mesh(dsns, NODES, [SYNCED])
    try:
        spock = run_ace("spock-diff", CLUSTER)
        assert spock.code == 0, spock.stdout + spock.stderr
        repset = run_ace("repset-diff", CLUSTER, "default")
        assert repset.code == 0, repset.stdout + repset.stderr
        assert f"{SYNCED}: identical" in repset.stdout
    finally:
        for dsn in dsns:
            drop_spock(dsn)
        as_admin_on_every_node(owned, [f"DROP TABLE IF EXISTS {SYNCED}"])


def test_cluster_files_holding_a_password_are_private(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "nodes", name="modes", ports=(1,))
    for admin in (False, True):
        target = cluster.write_cluster_json(tmp_path / f"cluster-{admin}", admin=admin)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600, target
        assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700, target.parent
    assert json.loads(target.read_text())["pgedge"]["databases"][0]["db_user"] == "postgres"


def test_serve_role_runs_as_documented_with_the_systems_python(pg_cluster: Any,
                                                               repo_root: Path) -> None:
    """docs/security.md says ``python3 deploy/localcluster.py serve-role ...``."""
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no python3 outside the virtual environment")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    done = subprocess.run([system_python, "deploy/localcluster.py", "serve-role",
                           "--dir", str(pg_cluster.base_dir), "--name", pg_cluster.name,
                           "--role", "op_served"], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "may now log in as op_served" in done.stdout


# ----- the grants a caller needs for the REST mtree endpoints (docs/security.md) -------------

TREE_TABLE = "public.op_tree"


def _as_caller(action: str, role: str, table: str = TREE_TABLE) -> dict[str, Any]:
    """One mtree action as a worker runs it for a REST caller: logged in as ``role``."""
    from ace_shared.config import load_settings
    from ace_shared.mtree.request import validate_mtree_request
    from ace_shared.mtree.run import run_mtree
    from ace_shared.tasks.ids import new_task_id
    settings = load_settings()
    request = validate_mtree_request({"action": action, "cluster_name": CLUSTER,
                                      "table_name": table, "role": role}, settings)
    return run_mtree(request, settings, new_task_id("mtree"))


def _tree_grants(role: str, table: str) -> list[str]:
    """What docs/security.md tells the administrator to grant for one built tree."""
    from ace_shared.mtree.objects import tree_key
    from ace_shared.nodes.ident import parse_table_name
    key = tree_key(parse_table_name(table))
    objects = ", ".join(f'ace_mtree."{kind}_{key}"' for kind in ("blocks", "inner", "log", "keys"))
    return [f"GRANT USAGE ON SCHEMA ace_mtree TO {role}",
            f"GRANT SELECT, UPDATE ON ace_mtree.trees TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {objects} TO {role}"]


@pytest.fixture(scope="module")
def tree_callers(pg_cluster: Any) -> Any:
    """``op_tree_reader`` may read the table; the operator built its tree.

    The table is the operator's own: building a tree on another role's table puts
    triggers on it, which PostgreSQL lets only its owner do (docs/security.md).
    """
    on_every_node(pg_cluster, [
        f"DROP TABLE IF EXISTS {TREE_TABLE}",
        f"CREATE TABLE {TREE_TABLE} (id int PRIMARY KEY, v text)",
        f"INSERT INTO {TREE_TABLE} SELECT g, 'v' || g FROM generate_series(1, 2000) g",
    ])
    pg_cluster.serve_role("op_tree_reader")
    on_every_node(pg_cluster, [f"GRANT SELECT ON {TREE_TABLE} TO op_tree_reader"])
    assert mtree_init().code == 0
    built = run_ace("mtree", "build", CLUSTER, TREE_TABLE)
    assert built.code == 0, built.stderr
    execute(pg_cluster.node_dsn(1), [f"UPDATE {TREE_TABLE} SET v = 'drift' WHERE id IN (3, 1999)"])
    yield pg_cluster
    run_ace("mtree", "teardown", CLUSTER, TREE_TABLE)
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {TREE_TABLE}"])


def test_a_reader_of_the_table_needs_the_documented_grants_for_its_tree(
        tree_callers: Any) -> None:
    from ace_shared.errors import AceError
    with pytest.raises(AceError, match="Permission denied"):
        _as_caller("table-diff", "op_tree_reader")
    as_admin_on_every_node(tree_callers, _tree_grants("op_tree_reader", TREE_TABLE))
    assert _as_caller("update", "op_tree_reader")["action"] == "update"
    summary = _as_caller("table-diff", "op_tree_reader")
    assert summary["diff_rows"] == 2, summary


def test_the_owner_of_a_table_builds_and_tears_down_its_tree_with_the_documented_grants(
        pg_cluster: Any) -> None:
    table = "public.op_mine"
    pg_cluster.serve_role("op_tree_owner")
    as_admin_on_every_node(pg_cluster, [
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 500) g",
        f"ALTER TABLE {table} OWNER TO op_tree_owner"])
    assert mtree_init().code == 0
    try:
        as_admin_on_every_node(pg_cluster, [
            "GRANT USAGE, CREATE ON SCHEMA ace_mtree TO op_tree_owner",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ace_mtree.trees TO op_tree_owner"])
        assert _as_caller("build", "op_tree_owner", table)["action"] == "build"
        assert _as_caller("table-diff", "op_tree_owner", table)["diff_rows"] == 0
        assert _as_caller("teardown", "op_tree_owner", table)["trees_removed"]
    finally:
        as_admin_on_every_node(pg_cluster, [
            f"DROP TABLE IF EXISTS {table}",
            "REVOKE ALL ON SCHEMA ace_mtree FROM op_tree_owner",
            "REVOKE ALL ON ace_mtree.trees FROM op_tree_owner"])


def test_mtree_init_says_in_one_sentence_that_the_event_trigger_is_an_administrators_step(
        pg_cluster: Any) -> None:
    as_login = run_ace("mtree", "init", CLUSTER, "--json")
    assert as_login.code == 0, as_login.stderr
    assert as_login.stderr.count("\n") == 1, as_login.stderr
    assert "admin cluster file" in as_login.stderr and "n1, n2 and n3" in as_login.stderr
    assert json.loads(as_login.stdout)["alter_table_watched"] == {n: False for n in NODES}
    as_admin = run_ace("mtree", "init", CLUSTER, "--json",
                       env={"ACE_CLUSTER_DIR": os.environ["ACE_TEST_ADMIN_CLUSTER_DIR"]})
    assert as_admin.code == 0 and as_admin.stderr == "", as_admin.stderr
    assert json.loads(as_admin.stdout)["alter_table_watched"] == {n: True for n in NODES}
