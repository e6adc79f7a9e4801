"""Auto-repair (beta): Spock exceptions into status rows, and insert-insert conflicts repaired.

Celery beat runs two polls from ``auto_repair_config``. The *poll*
(:func:`poll_exceptions`) copies new entries of ``spock.exception_log`` into
Spock's status tables as PENDING on every node. The *repair*
(:func:`repair_exceptions`) settles the PENDING failed INSERTs by last commit
wins (see :mod:`ace_shared.autorepair.insert`); other kinds of failure stay
PENDING for an operator, as in the original tool.

Each node is worked on independently and concurrently, on its own
connection: a node that is down, or that has no Spock exception tables, is
reported in the result and the others carry on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2.extensions import connection

from ace_shared.autorepair.insert import AppliedRows, repair_insert_conflict
from ace_shared.autorepair.tables import (
    copy_new_exceptions,
    count_other_pending,
    detect_layout,
    pending_inserts,
)
from ace_shared.config import Settings
from ace_shared.errors import AceError, NodeSkippedError, NodeUnreachableError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import NodeTarget, connect, node_errors, node_targets
from ace_shared.repair.mode import has_spock_repair_mode

DONE, SKIPPED, UNREACHABLE, FAILED = "done", "skipped", "unreachable", "failed"

NodeWork = Callable[[connection, str], dict[str, int]]


@dataclass
class NodeReport:
    """What one poll or repair did on one node, or why it did nothing there."""

    node: str
    state: str
    note: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, **self.counts}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class AutoRepairReport:
    """A poll's or repair's result over the cluster: per node, and summed."""

    cluster_name: str
    dbname: str
    nodes: list[NodeReport]

    @property
    def totals(self) -> dict[str, int]:
        summed: Counter[str] = Counter()
        for report in self.nodes:
            summed.update(report.counts)
        return dict(summed)

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_name": self.cluster_name, "database": self.dbname,
                "totals": self.totals, "nodes": {r.node: r.to_dict() for r in self.nodes}}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else exc.__class__.__name__


def _work_on(target: NodeTarget, work: NodeWork) -> NodeReport:
    try:
        conn = connect(target)
    except AceError as exc:
        state = UNREACHABLE if isinstance(exc, NodeUnreachableError) else FAILED
        return NodeReport(target.node, state, str(exc))
    with closing(conn):
        try:
            with node_errors(target.node):
                return NodeReport(target.node, DONE, counts=work(conn, target.node))
        except NodeSkippedError as exc:
            return NodeReport(target.node, SKIPPED, str(exc))
        except NodeUnreachableError as exc:
            return NodeReport(target.node, UNREACHABLE, str(exc))
        except AceError as exc:
            return NodeReport(target.node, FAILED, str(exc))
        except psycopg2.Error as exc:
            return NodeReport(target.node, FAILED,
                              f"Auto-repair failed on node {target.node}: {_first_line(exc)}.")


def _on_every_node(cluster_name: str, dbname: str | None, settings: Settings,
                   work: NodeWork) -> AutoRepairReport:
    cluster = load_cluster(settings.cluster_dir, cluster_name)
    database = cluster.database(dbname)
    active = tuple(n for n in cluster.nodes if n.is_active)
    targets = node_targets(cluster, active, database.name, settings)
    with ThreadPoolExecutor(max_workers=max(1, len(targets)),
                            thread_name_prefix="ace-autorepair") as pool:
        done = list(pool.map(lambda t: _work_on(t, work), targets))
    by_name = {r.node: r for r in done}
    reports = [by_name.get(n.name) or NodeReport(
        n.name, SKIPPED, f"Node {n.name} is marked inactive in cluster {cluster.name}.")
        for n in cluster.nodes]
    return AutoRepairReport(cluster.name, database.name, reports)


def _poll_node(conn: connection, node: str) -> dict[str, int]:
    with conn, conn.cursor() as cur:
        layout = detect_layout(cur, node)
        transactions, commands = copy_new_exceptions(cur, layout)
    return {"new_transactions": transactions, "new_commands": commands}


def poll_exceptions(cluster_name: str, dbname: str | None,
                    settings: Settings) -> AutoRepairReport:
    """On every node, copy new ``spock.exception_log`` entries into the status tables."""
    return _on_every_node(cluster_name, dbname, settings, _poll_node)


def _repair_node(conn: connection, node: str) -> dict[str, int]:
    with conn, conn.cursor() as cur:
        layout = detect_layout(cur, node)
        cur.execute("SELECT pg_catalog.current_setting('track_commit_timestamp')::pg_catalog.bool")
        if not cur.fetchone()[0]:
            raise NodeSkippedError(
                f"Node {node} has track_commit_timestamp off, so the age of its rows is "
                "unknown; turn it on (Spock needs it too) for auto-repair to compare commits.")
        spock = has_spock_repair_mode(cur)
        pending = pending_inserts(cur, layout)
    counts = Counter({"updated": 0, "kept": 0, "unresolved": 0, "busy": 0})
    applied: AppliedRows = set()
    for item in pending:
        counts[repair_insert_conflict(conn, node, layout, item, spock, applied)] += 1
    with conn, conn.cursor() as cur:
        left = count_other_pending(cur, layout)
    return {"insert_conflicts": len(pending), **counts, "other_pending": left}


def repair_exceptions(cluster_name: str, dbname: str | None,
                      settings: Settings) -> AutoRepairReport:
    """On every node, settle the PENDING failed INSERTs by last commit wins."""
    return _on_every_node(cluster_name, dbname, settings, _repair_node)
