"""repset-diff: read the set on every node, report membership, table-diff every table.

Each table of the set ends with one outcome: identical, differs (rows per pair
and its diff file), skipped, missing on some nodes, or failed with its
one-sentence reason. A table whose membership differs between nodes is
diffed all the same (when every node has it) and flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ace_shared.checks.report import write_result
from ace_shared.config import Settings
from ace_shared.diff.plan import resolve_targets
from ace_shared.nodes.each import on_each
from ace_shared.nodes.ident import TableName, split_identifiers
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.replication.detect import read_all
from ace_shared.repsetdiff.membership import Membership, existing_tables, set_membership
from ace_shared.repsetdiff.request import RepsetDiffRequest
from ace_shared.repsetdiff.tables import MISSING, SKIPPED, diff_tables, exit_code

Progress = Callable[[int, int], None]


def table_name(display: str) -> TableName:
    schema, table = split_identifiers(display)
    return TableName(schema, table)


def plan_tables(request: RepsetDiffRequest, membership: Membership,
                present: dict[str, set[str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Outcomes decided without diffing (skipped, missing), and the tables left to diff."""
    nodes = list(present)
    decided: list[dict[str, Any]] = []
    todo: list[str] = []
    for table in membership.tables:
        if table_name(table) in request.skip:
            decided.append({"table": table, "outcome": SKIPPED})
            continue
        lacking = [n for n in nodes if table not in present[n]]
        if lacking:
            decided.append({"table": table, "outcome": MISSING, "missing_on": lacking})
        else:
            todo.append(table)
    return decided, todo


def _membership_notes(membership: Membership, nodes: list[str]) -> list[dict[str, Any]]:
    notes = []
    for table in membership.tables:
        holders = membership.in_set_on[table]
        with_set = [n for n in nodes if n not in membership.nodes_without_set]
        if sorted(holders) != sorted(with_set):
            notes.append({"table": table, "in_set_on": holders,
                          "not_in_set_on": [n for n in with_set if n not in holders]})
    return notes


def plan_repset(request: RepsetDiffRequest, settings: Settings, task_id: str,
                ) -> tuple[dict[str, Any], list[str]]:
    """Read the set on every node: the result so far (outcomes decided without diffing,
    membership) and the tables left to diff."""
    started = datetime.now(timezone.utc)
    dbname, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                      settings, request.role)
    sessions = NodeSessions(targets)
    try:
        found = read_all(sessions)
        membership = set_membership(request.repset, found)
        present = on_each(sessions, lambda cur, _n: existing_tables(cur, membership.tables))
    finally:
        sessions.close()
    nodes = [t.node for t in targets]
    decided, todo = plan_tables(request, membership, present)
    partial = {
        "task_id": task_id, "command": "repset-diff", "cluster_name": request.cluster_name,
        "database": dbname, "repset_name": request.repset, "nodes": nodes,
        "systems": {n: r.system for n, r in found.items()},
        "nodes_without_set": membership.nodes_without_set,
        "membership_differences": _membership_notes(membership, nodes),
        "tables": decided, "start_time": started.isoformat(),
    }
    return partial, todo


def table_options(request: RepsetDiffRequest) -> dict[str, Any]:
    """What every table's diff is asked, besides its name."""
    return {**request.diff_options, "cluster_name": request.cluster_name,
            "dbname": request.dbname, "nodes": request.nodes, "role": request.role}


def finish_repset(partial: dict[str, Any], diffed: list[dict[str, Any]], settings: Settings,
                  output: str) -> dict[str, Any]:
    """Merge the diffed tables' outcomes in, set the exit code, write the result."""
    flagged = {n["table"]: n for n in partial["membership_differences"]}
    tables = sorted(partial["tables"] + diffed, key=lambda o: o["table"])
    for line in tables:
        if line["table"] in flagged:
            line["membership"] = flagged[line["table"]]
    code = exit_code(tables)
    if code == 0 and (flagged or partial["nodes_without_set"]):
        code = 1
    finished = datetime.now(timezone.utc)
    started = datetime.fromisoformat(partial["start_time"])
    result = {**partial, "tables": tables, "counts": _counts(tables),
              "end_time": finished.isoformat(),
              "time_taken": round((finished - started).total_seconds(), 3), "exit_code": code}
    return write_result(settings.output_dir, "repset_diffs", "repset_diff", result, output)


def run_repset_diff(request: RepsetDiffRequest, settings: Settings, task_id: str,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Check one replication set across the nodes in this process; write and return the result."""
    partial, todo = plan_repset(request, settings, task_id)
    diffed = diff_tables([table_name(t) for t in todo], table_options(request), settings,
                         progress)
    return finish_repset(partial, diffed, settings, request.output)


def _counts(tables: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tables:
        out[t["outcome"]] = out.get(t["outcome"], 0) + 1
    return out
