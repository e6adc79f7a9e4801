"""pglogical replication between the nodes of a local cluster, so the demo replicates.

ACE's cluster checks (``ace repset-diff``, ``ace spock-diff``) read a
replication catalog; pglogical's has the shape of Spock's (nodes, replication
sets with the set ``default``, subscriptions), so a local cluster that
replicates with pglogical lets every example of the README run as written.

:func:`replicate` makes every node a pglogical node that subscribes to every
other one (a full mesh; ``forward_origins = '{}'``, so a change travels one
hop, and a repair, which ACE writes under a replication origin, does not
travel at all) and puts the given tables in the set ``default`` of every node.
Tables join the set without copying data (``synchronize_data := false``):
whatever differs between the nodes when they join keeps differing, which is
what the demo's known divergence needs. Every step checks first, so running
it again changes nothing.

The nodes need the settings of :func:`replication_settings` (``localcluster.py
start --replication``) and pglogical installed for their server version
(``deploy/setup.sh`` installs ``postgresql-<major>-pglogical``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

REPLICATION_SETTINGS = {
    "wal_level": "logical",
    "shared_preload_libraries": "pglogical",
    "max_worker_processes": "20",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
}
SET_NAME = "default"
ALL_SETS = ("default", "default_insert_only", "ddl_sql")
WAIT_S = 60.0


def replication_settings(pg_bin: Path) -> dict[str, str]:
    """The nodes' settings for pglogical; servers that restrict output plugins must allow its own."""
    described = subprocess.run([str(pg_bin / "postgres"), "--describe-config"],
                               capture_output=True, text=True, check=False).stdout
    settings = dict(REPLICATION_SETTINGS)
    if any(line.startswith("output_plugin_libraries\t") for line in described.splitlines()):
        settings["output_plugin_libraries"] = "pgoutput, test_decoding, pglogical_output"
    return settings


def _query(dsn: str, statement: str | sql.Composable, params: Sequence[Any] = ()) -> list[Any]:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _wait(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {WAIT_S:.0f} s waiting for {what}")
        time.sleep(0.2)


def replicate(node_names: Sequence[str], dsns: Sequence[str], tables: Sequence[str]) -> None:
    """A pglogical full mesh between the nodes, with ``tables`` in the set ``default``.

    ``dsns`` are superuser logins to the database over TCP, one per node, which the
    nodes also use to reach one another. ``tables`` are written as in SQL
    (``public.customers``, ``"Sales"."Order Items"``). ACE's own login needs no
    grant: pglogical lets every role read its catalog.
    """
    for name, dsn in zip(node_names, dsns, strict=True):
        _query(dsn, "CREATE EXTENSION IF NOT EXISTS pglogical")
        if not _query(dsn, "SELECT 1 FROM pglogical.local_node"):
            _query(dsn, "SELECT pglogical.create_node(node_name := %s, dsn := %s)", (name, dsn))
        for table in tables:
            in_set = _query(dsn, "SELECT 1 FROM pglogical.replication_set_table t "
                            "JOIN pglogical.replication_set s ON s.set_id = t.set_id "
                            "WHERE s.set_name = %s AND t.set_reloid = %s::regclass",
                            (SET_NAME, table))
            if not in_set:
                _query(dsn, "SELECT pglogical.replication_set_add_table(%s, %s::regclass, "
                       "synchronize_data := false)", (SET_NAME, table))
    for i, (name, dsn) in enumerate(zip(node_names, dsns, strict=True)):
        for j, other in enumerate(node_names):
            if i == j:
                continue
            sub = f"sub_{name}_{other}"
            if _query(dsn, "SELECT 1 FROM pglogical.subscription WHERE sub_name = %s", (sub,)):
                continue
            _query(dsn, "SELECT pglogical.create_subscription(subscription_name := %s, "
                   "provider_dsn := %s, replication_sets := %s, synchronize_structure := false, "
                   "synchronize_data := false, forward_origins := '{}')",
                   (sub, dsns[j], list(ALL_SETS)))

    def replicating() -> bool:
        return all({r[0] for r in _query(dsn, "SELECT status FROM "
                                              "pglogical.show_subscription_status()")}
                   == {"replicating"} for dsn in dsns)
    _wait("every pglogical subscription to replicate", replicating)
