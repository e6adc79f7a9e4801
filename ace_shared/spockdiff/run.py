"""spock-diff: each node's replication configuration, every pair compared, with hints.

Native nodes have no node names of their own; they are known to their peers by
``host:port/dbname`` as their subscriptions' connection strings name them, so
that is their identity here, taken from the cluster definition.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from psycopg2.extensions import cursor

from ace_shared.checks.report import write_result
from ace_shared.config import Settings
from ace_shared.diff.plan import resolve_targets
from ace_shared.nodes.connection import NodeTarget
from ace_shared.nodes.each import on_each
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.replication.detect import read_node
from ace_shared.replication.model import NodeReplication
from ace_shared.spockdiff.compare import compare_all
from ace_shared.spockdiff.hints import node_hints, read_user_tables
from ace_shared.spockdiff.request import SpockDiffRequest


def _read(targets: tuple[NodeTarget, ...],
          ) -> tuple[dict[str, NodeReplication], dict[str, Any]]:
    by_node = {t.node: t for t in targets}

    def read(cur: cursor, node: str) -> tuple[NodeReplication, Any]:
        rep = read_node(cur, node)
        if rep.system == "native":
            t = by_node[node]
            rep = replace(rep, identity=f"{t.host}:{t.port}/{t.dbname}")
        return rep, read_user_tables(cur)

    sessions = NodeSessions(targets)
    try:
        both = on_each(sessions, read)
    finally:
        sessions.close()
    return {n: v[0] for n, v in both.items()}, {n: v[1] for n, v in both.items()}


def run_spock_diff(request: SpockDiffRequest, settings: Settings, task_id: str) -> dict[str, Any]:
    """Read, compare and write; return the result."""
    started = datetime.now(timezone.utc)
    dbname, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                      settings, request.role)
    found, tables = _read(targets)
    differences = compare_all(found)
    hints = [h for n, rep in found.items() for h in node_hints(rep, tables[n])]
    finished = datetime.now(timezone.utc)
    result = {
        "task_id": task_id, "command": "spock-diff", "cluster_name": request.cluster_name,
        "database": dbname, "nodes": list(found),
        "node_config": {n: rep.to_dict() for n, rep in found.items()},
        "differences": differences, "difference_count": len(differences), "hints": hints,
        "mismatch": bool(differences), "start_time": started.isoformat(),
        "end_time": finished.isoformat(),
        "time_taken": round((finished - started).total_seconds(), 3),
        "exit_code": 1 if differences else 0,
    }
    return write_result(settings.output_dir, "spock_diffs", "spock_diff", result, request.output)
