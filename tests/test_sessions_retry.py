"""A kept connection the node has closed is replaced, and no write runs twice.

Node sessions keep their connections between queries; a node restart or an idle
timeout closes them on the server's side. Reads then run again on a new
connection. Writes (an mtree job's sessions) must not: a connection lost after
the work began may have lost it during the commit, which the node may have made.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import run_sql
from psycopg2.extensions import cursor

from ace_shared.config import load_settings
from ace_shared.diff.queries import PINNED_PLAN
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import NodeTarget, node_targets
from ace_shared.nodes.sessions import NodeSessions, fetching

PROBE = "public.sessions_retry_probe"


def _targets() -> tuple[NodeTarget, ...]:
    settings = load_settings()
    cluster = load_cluster(settings.cluster_dir, "testclus")
    return node_targets(cluster, cluster.nodes, None, settings)


def _pid(cur: cursor) -> int:
    cur.execute("SELECT pg_catalog.pg_backend_pid()")
    return int(cur.fetchone()[0])


def _close_from_the_node(pg_cluster: Any, pid: int) -> None:
    """What a node restart does to a kept connection: the server ends it."""
    run_sql(pg_cluster.admin_dsn(0), "SELECT pg_terminate_backend(%s)", params=(pid,))


@pytest.fixture()
def probe(pg_cluster: Any) -> Iterator[str]:
    admin = pg_cluster.admin_dsn(0, pg_cluster.dbname)
    run_sql(admin, f"DROP TABLE IF EXISTS {PROBE}", f"CREATE TABLE {PROBE} (n int)",
            f"GRANT SELECT, INSERT ON {PROBE} TO {pg_cluster.user}")
    yield PROBE
    run_sql(admin, f"DROP TABLE IF EXISTS {PROBE}")


def _rows(pg_cluster: Any) -> int:
    admin = pg_cluster.admin_dsn(0, pg_cluster.dbname)
    return int(run_sql(admin, f"SELECT count(*) FROM {PROBE}")[0][0])


def test_a_read_on_a_connection_the_node_closed_runs_again(pg_cluster: Any) -> None:
    sessions = NodeSessions(_targets())
    try:
        first = sessions.on_one("n1", _pid)
        _close_from_the_node(pg_cluster, first)
        again = sessions.on_one("n1", _pid)
        assert again != first
    finally:
        sessions.close()


def test_a_write_on_a_connection_the_node_closed_runs_once_on_a_new_one(
        pg_cluster: Any, probe: str) -> None:
    sessions = NodeSessions(_targets(), readonly=False)

    def insert(cur: cursor) -> int:
        cur.execute(f"INSERT INTO {probe} VALUES (1)")
        cur.connection.commit()
        return _pid(cur)
    try:
        first = sessions.on_one("n1", _pid)
        _close_from_the_node(pg_cluster, first)
        assert sessions.on_one("n1", insert) != first
        assert _rows(pg_cluster) == 1
    finally:
        sessions.close()


def test_a_write_whose_connection_is_lost_after_it_began_is_not_run_again(
        pg_cluster: Any, probe: str) -> None:
    """The connection dies after the commit was sent: running the work again would
    write its rows a second time."""
    sessions = NodeSessions(_targets(), readonly=False)

    def insert_then_lose_the_connection(cur: cursor) -> None:
        cur.execute(f"INSERT INTO {probe} VALUES (1)")
        cur.connection.commit()
        cur.execute("SELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())")
    try:
        sessions.on_one("n1", _pid)  # a kept connection, as between two steps of a job
        with pytest.raises(AceError):
            sessions.on_one("n1", insert_then_lose_the_connection)
        assert _rows(pg_cluster) == 1
    finally:
        sessions.close()


def test_a_fetch_begun_on_every_node_answers_later_with_its_planner_settings(
        pg_cluster: Any) -> None:
    sessions = NodeSessions(_targets(), threads_per_node=2)
    try:
        slow = sessions.start_all(fetching(
            "SELECT pg_catalog.pg_sleep(0.5), pg_catalog.current_setting('enable_seqscan')",
            setup=PINNED_PLAN))
        started = time.monotonic()
        assert sessions.fetch_from("n1", "SELECT 1") == [(1,)]  # while the fetch runs
        assert time.monotonic() - started < 0.4
        assert {n: rows[0][1] for n, rows in slow().items()} == dict.fromkeys(sessions.order,
                                                                               "off")
        # the settings ended with the fetch's transaction
        assert sessions.fetch_from("n1", "SHOW enable_seqscan") == [("on",)]
    finally:
        sessions.close()
