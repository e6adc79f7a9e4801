"""Merkle trees on nodes that really replicate (PostgreSQL's own logical replication).

ACE's objects must not travel: a ``FOR ALL TABLES`` publication would send any
logged table, so the trees' tables are unlogged and never published, and the
subscription keeps working after ``mtree init`` and ``build``. Rows that arrive
through replication are applied with ``session_replication_role = replica``,
where statement triggers stay silent: the replica-enabled row trigger must log
them, or the subscriber's tree would go stale.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from diff_helpers import execute, query, run_ace
from localcluster import LocalCluster, free_ports

CLUSTER = "mtrepl"


@pytest.fixture(scope="module")
def replicating(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Any,
                ) -> Iterator[LocalCluster]:
    """Two nodes, ``a`` publishing every table and ``b`` subscribed to it."""
    cluster = LocalCluster(tmp_path_factory.mktemp("repl"), name=CLUSTER,
                           ports=free_ports(2, 18000, 18999), node_names=("a", "b"))
    try:
        cluster.start()
        for i in (0, 1):
            _autocommit(cluster.admin_dsn(i), "ALTER SYSTEM SET wal_level = logical")
            cluster.stop_node(i)
            cluster.start_node(i)
        cluster.write_cluster_json(Path(os.environ["ACE_CLUSTER_DIR"]))
        for i in (0, 1):
            execute(cluster.admin_dsn(i, cluster.dbname), [
                "CREATE TABLE public.r (id int PRIMARY KEY, v text)",
                f"ALTER TABLE public.r OWNER TO {cluster.user}"])
        execute(cluster.admin_dsn(0, cluster.dbname),
                ["CREATE PUBLICATION ace_all FOR ALL TABLES"])
        # the walsender needs a replication login; ACE's own is none (docs/security.md)
        publisher = (f"host=127.0.0.1 port={cluster.nodes[0].port} dbname={cluster.dbname} "
                     "user=postgres")
        _autocommit(cluster.admin_dsn(1, cluster.dbname),
                    f"CREATE SUBSCRIPTION ace_sub CONNECTION '{publisher}' PUBLICATION ace_all")
        yield cluster
    finally:
        cluster.stop()


def _autocommit(dsn: str, statement: str) -> None:
    """Run a statement that may not run inside a transaction block."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _wait_for(dsn: str, sql: str, expected: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(dsn, sql) == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{sql} never gave {expected} on {dsn}")


def test_trees_do_not_replicate_and_track_what_replication_applies(
        replicating: LocalCluster) -> None:
    a, b = replicating.node_dsn(0), replicating.node_dsn(1)
    execute(a, ["INSERT INTO r SELECT g, 'v' FROM generate_series(1, 3000) g"])
    _wait_for(b, "SELECT count(*) FROM r", [(3000,)])
    assert run_ace("mtree", "init", CLUSTER).code == 0
    assert run_ace("mtree", "build", CLUSTER, "public.r").code == 0
    published = query(a, "SELECT count(*) FROM pg_publication_tables "
                         "WHERE schemaname = 'ace_mtree'")
    assert published == [(0,)]
    # replication keeps working, and b's tree learns of the applied rows
    execute(a, ["INSERT INTO r SELECT g, 'w' FROM generate_series(3001, 3500) g",
                "UPDATE r SET v = 'changed' WHERE id <= 100", "DELETE FROM r WHERE id = 200"])
    _wait_for(b, "SELECT count(*), count(*) FILTER (WHERE v = 'changed') FROM r", [(3499, 100)])
    same = run_ace("mtree", "table-diff", CLUSTER, "public.r")
    assert same.code == 0, same.stdout + same.stderr
    summary = same.diff()["summary"]
    assert summary["mtree"]["leaves_differing"] == 0
    assert summary["mtree"]["changes_folded"]["b"] >= 600
    # a write on b alone is a real difference, found through the tree
    execute(b, ["UPDATE r SET v = 'only on b' WHERE id = 1234"])
    found = run_ace("mtree", "table-diff", CLUSTER, "public.r")
    assert found.code == 1
    rows = found.diff()["diffs"]["a/b"]["b"]
    assert [r["id"] for r in rows] == ["1234"]
