"""A real replicating cluster for the checks: pglogical in ``acedb``, native in ``natdb``.

Three nodes started with ``wal_level = logical`` and pglogical preloaded. In
``acedb`` every node is a pglogical node subscribing to both others (a full
mesh, replication proven by a row travelling); in ``natdb`` every node
publishes ``pub`` and subscribes to both others' publications. The tests then
break each mesh on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_sql import run_sql

REPL_SETTINGS = {
    "wal_level": "logical",
    "shared_preload_libraries": "pglogical",
    "max_worker_processes": "20",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
}
NODES = ("n1", "n2", "n3")
ALL_SETS = "{default,default_insert_only,ddl_sql}"


def autocommit(dsn: str, *statements: str) -> list[tuple[Any, ...]]:
    """Each statement on its own (replication's commands refuse a transaction block)."""
    return run_sql(dsn, *statements, autocommit=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def libpq(cluster: Any, i: int, dbname: str) -> str:
    """The postgres superuser over TCP (trusted on the scratch nodes' loopback): building a
    mesh (extensions, nodes, subscriptions) needs one; ACE's own login is not one."""
    return f"host=127.0.0.1 port={cluster.ports[i]} dbname={dbname} user=postgres"


def add_database(cluster_json: Path, dbname: str, user: str, password: str) -> None:
    doc = json.loads(cluster_json.read_text())
    doc["pgedge"]["databases"].append({"db_name": dbname, "db_user": user,
                                       "db_password": password})
    cluster_json.write_text(json.dumps(doc, indent=2))


def pglogical_mesh(cluster: Any) -> None:
    for i, name in enumerate(NODES):
        autocommit(libpq(cluster, i, "acedb"),
                   "CREATE EXTENSION IF NOT EXISTS pglogical",
                   "CREATE TABLE pl_a (id int PRIMARY KEY, v text)",
                   "CREATE TABLE pl_b (id int PRIMARY KEY, v text)",
                   f"SELECT pglogical.create_node(node_name := '{name}',"
                   f" dsn := '{libpq(cluster, i, 'acedb')}')",
                   "SELECT pglogical.replication_set_add_table('default', 'pl_a')",
                   "SELECT pglogical.replication_set_add_table('default', 'pl_b')")
    for i, name in enumerate(NODES):
        for j, other in enumerate(NODES):
            if i != j:
                autocommit(libpq(cluster, i, "acedb"),
                           f"SELECT pglogical.create_subscription("
                           f"subscription_name := 'sub_{name}_{other}',"
                           f" provider_dsn := '{libpq(cluster, j, 'acedb')}',"
                           f" replication_sets := '{ALL_SETS}', synchronize_structure := false,"
                           f" synchronize_data := false, forward_origins := '{{}}')")

    def all_replicating() -> bool:
        return all(
            {r[0] for r in autocommit(libpq(cluster, i, "acedb"),
                                      "SELECT status FROM pglogical.show_subscription_status()")}
            == {"replicating"} for i in range(len(NODES)))
    wait_for("the pglogical mesh to replicate", all_replicating)
    autocommit(libpq(cluster, 0, "acedb"), "INSERT INTO pl_a VALUES (1, 'from n1')")
    def arrived(i: int) -> Callable[[], bool]:
        return lambda: bool(autocommit(libpq(cluster, i, "acedb"),
                                       "SELECT count(*) FROM pl_a")[0][0] == 1)
    for i in (1, 2):
        wait_for(f"a row to reach {NODES[i]}", arrived(i))


def native_mesh(cluster: Any) -> None:
    for i in range(len(NODES)):
        autocommit(cluster.admin_dsn(i), f"CREATE DATABASE natdb OWNER {cluster.user}")
        # ACE's login reads the subscriptions' providers (docs/security.md)
        autocommit(cluster.admin_dsn(i, "natdb"),
                   f"GRANT SELECT (subconninfo) ON pg_catalog.pg_subscription TO {cluster.user}")
        autocommit(libpq(cluster, i, "natdb"),
                   "CREATE TABLE nt_a (id int PRIMARY KEY, v text)",
                   "CREATE TABLE nt_b (id int PRIMARY KEY, v text)",
                   "CREATE PUBLICATION pub FOR TABLE nt_a, nt_b")
    for i, name in enumerate(NODES):
        for j, other in enumerate(NODES):
            if i != j:
                autocommit(libpq(cluster, i, "natdb"),
                           f"CREATE SUBSCRIPTION sub_{name}_{other} CONNECTION "
                           f"'{libpq(cluster, j, 'natdb')}' PUBLICATION pub"
                           " WITH (copy_data = false)")

    def all_running() -> bool:
        return all(autocommit(libpq(cluster, i, "natdb"),
                              "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL"
                              " AND relid IS NULL")[0][0] == 2 for i in range(len(NODES)))
    wait_for("the native subscriptions to start", all_running)


def server_settings() -> dict[str, str]:
    """The mesh's settings; servers that restrict output plugins must allow pglogical's."""
    from localcluster import find_pg_bin
    described = subprocess.run([str(find_pg_bin() / "postgres"), "--describe-config"],
                               capture_output=True, text=True, check=False).stdout
    settings = dict(REPL_SETTINGS)
    for line in described.splitlines():
        if line.startswith("output_plugin_libraries\t"):
            settings["output_plugin_libraries"] = "pgoutput, test_decoding, pglogical_output"
    return settings


def start_replication_cluster(base: Path, cluster_dir: Path) -> Any:
    from localcluster import LocalCluster, free_ports
    cluster = LocalCluster(base, name="replclus", ports=free_ports(3, 17000, 17499),
                           node_names=NODES, server_settings=server_settings())
    cluster.start()
    path = cluster.write_cluster_json(cluster_dir)
    add_database(path, "natdb", cluster.user, cluster.password)
    return cluster


def cluster_dir() -> Path:
    return Path(os.environ["ACE_CLUSTER_DIR"])
