"""The fleet's cap on connections per node, and scheduled jobs that never overlap.

Two workers of three processes each diff a 100-table replication set against
nodes started with a small ``max_connections``. Left alone every process would
keep sessions to every node; with ``MAX_CONNECTIONS_PER_NODE`` the nodes never
see more than the cap from ACE, jobs wait for a connection (and say so) rather
than fail, and the result is the same as ever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from fleet_helpers import Fleet, RedisServer, own_fleet, send_as_beat, wait_for
from localcluster import LocalCluster, free_ports
from node_sql import run_sql

from ace_shared.errors import ConnectionsBusyError
from ace_shared.tasks.store import COMPLETED, TaskStore
from ace_workers.fleet import published
from ace_workers.fleet.connpermits import FleetPermits, in_use, permits_key, waiters_key
from ace_workers.fleet.counters import redis_client

CAP = 3
TABLES = 100
SERVER = {"max_connections": "10"}  # 7 for ACE's login, 3 kept for superusers


def _admin(cluster: LocalCluster, i: int, *statements: str) -> list[tuple[Any, ...]]:
    return run_sql(cluster.admin_dsn(i, cluster.dbname), *statements, autocommit=True)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    """Two nodes allowing 10 connections, publishing ``pub``: 100 tables, one differing."""
    cluster = LocalCluster(tmp_path_factory.mktemp("capped"), name="capclus",
                           ports=free_ports(2, 17500, 17999), node_names=("n1", "n2"),
                           server_settings=SERVER)
    cluster_dir = tmp_path_factory.mktemp("capped-cluster")
    cluster.start()
    try:
        cluster.write_cluster_json(cluster_dir)
        tables = [f"public.cap_{i:03d}" for i in range(TABLES)]
        for i in range(2):
            _admin(cluster, i, *(f"CREATE TABLE {t} (id int PRIMARY KEY, v text);"
                                 f"INSERT INTO {t} SELECT g, 'v' || g FROM "
                                 "generate_series(1, 50) g" for t in tables),
                   f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {cluster.user}",
                   f"CREATE PUBLICATION pub FOR TABLE {', '.join(tables)}")
        _admin(cluster, 1, "UPDATE public.cap_042 SET v = 'changed' WHERE id = 7")
        yield cluster, cluster_dir
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def fleet(capped: tuple[LocalCluster, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    cluster, cluster_dir = capped
    with own_fleet(tmp_path_factory.mktemp("capfleet"), ("cw1", "cw2"), concurrency=3,
                   ACE_CLUSTER_DIR=str(cluster_dir),
                   ACE_MAX_CONNECTIONS_PER_NODE=str(CAP),
                   **cluster.client_settings()) as fl:
        yield fl


class Watch:
    """Counts ACE's sessions on each node many times a second, as a superuser."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.most = {0: 0, 1: 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conns = [psycopg2.connect(self.cluster.admin_dsn(i)) for i in (0, 1)]
        for c in conns:
            c.autocommit = True
        try:
            while not self.stop.is_set():
                for i, conn in enumerate(conns):
                    with conn.cursor() as cur:
                        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                    (self.cluster.user,))
                        self.most[i] = max(self.most[i], cur.fetchone()[0])
                time.sleep(0.01)
        finally:
            for c in conns:
                c.close()

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _taken_by_another_host(client: Any, cluster: LocalCluster) -> dict[str, int]:
    """Make n2 look held to the cap by another host, with nothing of the fleet's held.

    The workers keep their sessions between tasks, so a task could otherwise find
    its connections open already and never wait: someone waiting (a waiter
    entered for both nodes) makes them give theirs back first.
    """
    far = int(time.time() * 1000) + 600_000
    addresses = [f"127.0.0.1:{port}" for port in cluster.ports]
    for address in addresses:
        client.zadd(waiters_key(address), {"test-waiter": far})
    try:
        wait_for(lambda: all(in_use(client, a) == 0 for a in addresses), 30,
                 "the workers to give back the sessions they kept")
    finally:
        for address in addresses:
            client.zrem(waiters_key(address), "test-waiter")
    blockers = {f"other-host:{i}": far for i in range(CAP)}
    client.zadd(permits_key(addresses[1]), blockers)
    return blockers


def test_a_100_table_repset_diff_keeps_within_the_cap_and_finishes_right(
        capped: tuple[LocalCluster, Path], fleet: Fleet) -> None:
    cluster, _ = capped
    with Watch(cluster) as watch:
        run = fleet.ace("repset-diff", "capclus", "pub", timeout=600)
    assert run.returncode == 1, (run.stdout, run.stderr)  # one table differs, none failed
    assert "100 tables: 99 identical, 1 differs" in run.stdout or (
        "cap_042" in run.stdout and "failed" not in run.stdout), run.stdout
    assert "public.cap_042" in run.stdout
    assert "failed" not in run.stdout.lower() and "too many clients" not in run.stderr
    # six worker processes wanted sessions to both nodes; the nodes saw at most the cap
    assert 1 <= watch.most[0] <= CAP and 1 <= watch.most[1] <= CAP, watch.most
    client = redis_client(fleet.env["ACE_BROKER_URL"])
    assert "waiting for a connection to n" in "".join(fleet.log(n) for n in fleet.names)
    for port in cluster.ports:  # the fleet keeps sessions it uses, never more than the cap
        assert in_use(client, f"127.0.0.1:{port}") <= CAP


def test_waiting_for_a_connection_is_progress_then_the_job_finishes(
        capped: tuple[LocalCluster, Path], fleet: Fleet) -> None:
    cluster, _ = capped
    client = redis_client(fleet.env["ACE_BROKER_URL"])
    address = f"127.0.0.1:{cluster.ports[1]}"
    blockers = _taken_by_another_host(client, cluster)
    try:
        run = fleet.ace("table-diff", "capclus", "public.cap_042", "--no-wait")
        task_id = run.stdout.strip()
        assert run.returncode == 0 and task_id, run.stderr

        def note() -> str | None:
            state = published.read(client, task_id)
            return state.note if state else None
        wait_for(lambda: note() is not None, 60, "the task to say what it waits for")
        assert note() == f"waiting for a connection to n2: {CAP} of {CAP} in use"
        state = published.read(client, task_id)
        assert state is not None and not state.finished  # waiting is no failure
    finally:
        client.zrem(permits_key(address), *blockers)
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    wait_for(lambda: (r := store.get(task_id)) is not None and r.status == COMPLETED, 120,
             "the diff to finish once a connection came free")
    record = store.get(task_id)
    assert record is not None and record.result["summary"]["diff_rows_by_pair"] == {"n1/n2": 1}
    assert note() is None


@pytest.mark.db
def test_a_wait_has_an_end(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = redis_client(server.url())
        client.zadd(permits_key("db.example:5432"), {"elsewhere": time.time() * 1000 + 60_000})
        notes: list[str | None] = []
        permits = FleetPermits(lambda: client, 1, 1, on_wait=notes.append)
        with pytest.raises(ConnectionsBusyError) as caught:
            permits.acquire("n2", "db.example:5432")
        assert str(caught.value) == (
            "No connection to node n2 came free in 1 s (1 of 1 in use by ACE): raise "
            "MAX_CONNECTIONS_PER_NODE or CONNECTION_WAIT_SECONDS, or run fewer jobs at once.")
        assert notes[0] == "waiting for a connection to n2: 1 of 1 in use" and notes[-1] is None
        # a holder that stops renewing (its host died) frees its slot when its lease ends
        client.zadd(permits_key("db.example:5432"), {"elsewhere": time.time() * 1000 + 300})
        time.sleep(0.4)
        token = permits.acquire("n2", "db.example:5432")
        assert in_use(client, "db.example:5432") == 1
        permits.release("db.example:5432", token)
        assert in_use(client, "db.example:5432") == 0
    finally:
        server.stop()


def test_a_scheduled_job_still_running_when_due_again_is_skipped_and_logged(
        capped: tuple[LocalCluster, Path], fleet: Fleet) -> None:
    cluster, _ = capped
    client = redis_client(fleet.env["ACE_BROKER_URL"])
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    address = f"127.0.0.1:{cluster.ports[1]}"
    job = ["cap_job", {"cluster_name": "capclus", "repset_name": "pub"}, "repset-diff"]

    def runs() -> list[Any]:
        return [r for r in store.recent(200) if r.requested_by == "scheduler:cap_job"]
    blockers = _taken_by_another_host(client, cluster)  # the first run waits for n2 ...
    try:
        send_as_beat(fleet.env, "ace.scheduled_diff", job)
        wait_for(lambda: len(runs()) == 1 and runs()[0].status == "RUNNING", 60,
                 "the first run to start")
        first = runs()[0].task_id
        send_as_beat(fleet.env, "ace.scheduled_diff", job)  # ... when it is due again
        logs = lambda: "".join(fleet.log(n) for n in fleet.names)  # noqa: E731
        wait_for(lambda: f"scheduled job cap_job skipped: its run {first} is still going"
                 in logs(), 60, "the second run to be skipped")
        assert len(runs()) == 1
    finally:
        client.zrem(permits_key(address), *blockers)
    wait_for(lambda: store.get(first).status == COMPLETED, 600, "the first run to finish")
    assert store.get(first).result["summary"]["counts"] == {"differs": 1, "identical": 99}
    send_as_beat(fleet.env, "ace.scheduled_diff", job)  # due once more, nothing running
    wait_for(lambda: len(runs()) == 2, 60, "the next run to start")
    assert len(runs()) == 2


def test_jobs_take_their_nodes_in_one_order_so_none_waits_on_another(
        capped: tuple[LocalCluster, Path], tmp_path: Path) -> None:
    """Cap 1: two jobs on both nodes at once would each hold one node the other waits for,
    were their permits not all taken before connecting, in one order."""
    from ace_shared.config import load_settings
    from ace_shared.diff.plan import resolve_targets
    from ace_shared.nodes import permits
    from ace_shared.nodes.sessions import NodeSessions

    cluster, cluster_dir = capped
    settings = load_settings(environ={"ACE_CLUSTER_DIR": str(cluster_dir),
                                      **cluster.client_settings()})
    _, targets = resolve_targets("capclus", None, "all", settings, None)
    server = RedisServer(tmp_path)
    server.start()
    client = redis_client(server.url())
    permits.install(FleetPermits(lambda: client, 1, 5))
    try:
        def job() -> None:
            for _ in range(12):
                sessions = NodeSessions(targets)
                try:
                    sessions.on_all(lambda cur: cur.execute("SELECT pg_catalog.pg_sleep(0.02)"))
                finally:
                    sessions.close()
        jobs = [threading.Thread(target=job) for _ in range(2)]
        errors: list[BaseException] = []
        for t in jobs:
            t.run = (lambda f: lambda: _catching(f, errors))(t.run)  # type: ignore[method-assign]
            t.start()
        for t in jobs:
            t.join(60)
        assert errors == []
        assert all(in_use(client, f"127.0.0.1:{p}") == 0 for p in cluster.ports)
    finally:
        permits.install(None)
        server.stop()


def _catching(run: Any, errors: list[BaseException]) -> None:
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 (reported by the test)
        errors.append(exc)
