"""Settling one failed INSERT (an insert-insert conflict) by last commit wins.

Spock could not apply a remote INSERT because the node already had a row
with that key. Whichever of the two was committed last wins: when the local
row's commit (``pg_xact_commit_timestamp(xmin)``) is older than the remote
transaction's, the local row takes the remote values, written in Spock's
repair mode so that the fix does not replicate back out; otherwise the local
row stays. A local row whose commit time is no longer known (frozen, or from
before ``track_commit_timestamp`` was on) is older than any recorded remote
commit. Either way the command becomes RESOLVED with a note of what was done.

Each conflict is settled in its own transaction. One that cannot be settled
(the table is gone, a value no longer fits) becomes UNRESOLVED with the
reason; one whose rows are locked by someone else stays PENDING for the next
run. Remote values arrive as JSON; each is sent as text and cast to the
local column's catalog type, so it round-trips whatever the type. A table whose
update would run code a role other than ACE's login controls (an ``ENABLE
ALWAYS`` trigger of its owner's, a CHECK calling her function) is not written:
the conflict becomes UNRESOLVED, saying which code and what to do.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, cursor

from ace_shared.autorepair.tables import (
    ExceptionLayout,
    PendingInsert,
    lock_pending,
    mark_command,
    settle_transaction,
)
from ace_shared.diff.queries import Name, catalog_text, table_ref
from ace_shared.errors import AceError, RepairError
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape, read_shape
from ace_shared.repair.mode import enter_quiet_mode, leave_quiet_mode
from ace_shared.repair.ownercode import lock_for_writes, refuse_owner_code

LOCK_TIMEOUT = "10s"
# rows given remote values in this run: (table, key texts)
AppliedRows = set[tuple[str, tuple[str | None, ...]]]
UPDATED, KEPT, UNRESOLVED, BUSY = "updated", "kept", "unresolved", "busy"


def _as_text(value: Any) -> str | None:
    """A JSON value as the text PostgreSQL reads back: strings as they are, the rest as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def remote_values(item: PendingInsert, shape: TableShape, node: str) -> dict[str, str | None]:
    """The remote row, column -> text, checked against the local table's columns and key."""
    tup = item.remote_new_tup
    if not isinstance(tup, list) or not all(
            isinstance(a, dict) and isinstance(a.get("attname"), str) for a in tup):
        raise RepairError("The exception's remote_new_tup is not a list of {attname, value} "
                          "objects, so the remote row is unknown; settle it by hand.")
    values = {a["attname"]: _as_text(a.get("value")) for a in tup}
    unknown = sorted(set(values) - set(shape.column_names))
    if unknown:
        raise RepairError(f"Table {shape.table.display} on node {node} has no column "
                          f"{', '.join(unknown)}, which the remote row has; align the schemas "
                          "and settle this exception by hand.")
    missing = [k for k in shape.key if k not in values]
    if missing:
        raise RepairError(f"The remote row lacks key column {', '.join(missing)} of table "
                          f"{shape.table.display}, so the local row cannot be found.")
    return values


def _generated_columns(cur: cursor, shape: TableShape) -> set[str]:
    cur.execute("SELECT attname FROM pg_catalog.pg_attribute "
                "WHERE attrelid OPERATOR(pg_catalog.=) %s::pg_catalog.regclass "
                "AND attnum OPERATOR(pg_catalog.>) 0 AND attgenerated OPERATOR(pg_catalog.<>) ''",
                (str(shape.table),))
    return {r[0] for r in cur.fetchall()}


def _key_match(shape: TableShape, values: dict[str, str | None],
               ) -> tuple[sql.Composable, list[str | None]]:
    # the key as its base type: finding the row runs no domain CHECK (docs/security.md)
    cond = sql.SQL(" AND ").join(sql.SQL("{} OPERATOR(pg_catalog.=) %s::{}").format(
        Name(c.name), catalog_text(c.cast_sql)) for c in shape.key_columns)
    return cond, [values[c.name] for c in shape.key_columns]


def _local_commit(cur: cursor, shape: TableShape,
                  values: dict[str, str | None]) -> tuple[bool, datetime | None]:
    """Lock the local row with the remote row's key; (found, its commit time)."""
    cond, params = _key_match(shape, values)
    cur.execute(sql.SQL("SELECT pg_catalog.pg_xact_commit_timestamp(xmin) FROM {} WHERE {} "
                        "FOR UPDATE")
                .format(table_ref(shape), cond), params)
    row = cur.fetchone()
    return (False, None) if row is None else (True, row[0])


def _overwrite(cur: cursor, node: str, shape: TableShape, values: dict[str, str | None],
               spock: bool) -> None:
    """Give the local row the remote values, without the change replicating back out.

    Refused (:class:`OwnerCodeRefusedError`) when the update would run code a role other than
    ACE's login controls (:mod:`ace_shared.repair.ownercode`).
    """
    skip = set(shape.key) | _generated_columns(cur, shape)
    columns = [c for c in shape.columns if c.name in values and c.name not in skip]
    if not columns:
        return
    cond, key_params = _key_match(shape, values)
    quiet = None
    if spock:
        quiet = enter_quiet_mode(cur, spock=True, fire_triggers=False)
    else:
        cur.execute("SET LOCAL session_replication_role = replica")
    written = [c.name for c in columns]
    lock_for_writes(cur, shape.table)
    refuse_owner_code(cur, shape.table, node, written, action="Auto-repair")
    cur.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(
        table_ref(shape),
        sql.SQL(", ").join(sql.SQL("{} = %s::{}").format(Name(c.name), catalog_text(c.type_sql))
                           for c in columns), cond),
        [values[c.name] for c in columns] + key_params)
    refuse_owner_code(cur, shape.table, node, written, action="Auto-repair")
    if quiet is not None:
        leave_quiet_mode(cur, quiet)


def _stamp(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _settle(cur: cursor, node: str, item: PendingInsert, spock: bool,
            applied: AppliedRows) -> tuple[str, str, dict[str, Any]]:
    """Decide and apply last commit wins; (outcome, status, resolution details)."""
    if not item.table_schema or not item.table_name:
        raise RepairError("The exception does not name its table; settle it by hand.")
    shape = read_shape(cur, TableName(item.table_schema, item.table_name), node)
    values = remote_values(item, shape, node)
    found, local_ts = _local_commit(cur, shape, values)
    times = {"remote_commit_ts": _stamp(item.remote_commit_ts),
             "local_commit_ts": _stamp(local_ts), "table": shape.table.display}
    if not found:
        return UNRESOLVED, "UNRESOLVED", {
            "action": "none", **times,
            "reason": "no local row has this key any more; decide whether the remote row "
                      "should be inserted"}
    row_id = (str(shape.table), tuple(values[k] for k in shape.key))
    if row_id in applied:
        return KEPT, "RESOLVED", {"action": "kept local row", **times,
                                  "reason": "a newer remote row was applied to it in this run"}
    if local_ts is not None and local_ts >= item.remote_commit_ts:
        return KEPT, "RESOLVED", {"action": "kept local row", **times,
                                  "reason": "local commit is newer"}
    _overwrite(cur, node, shape, values, spock)
    applied.add(row_id)
    reason = ("remote commit is newer" if local_ts is not None
              else "remote commit is newer (the local row's commit time is no longer recorded)")
    return UPDATED, "RESOLVED", {"action": "updated local row to remote values", **times,
                                 "reason": reason}


def _record_failure(conn: connection, layout: ExceptionLayout, item: PendingInsert,
                    error: str) -> None:
    with conn, conn.cursor() as cur:
        mark_command(cur, layout, item, "UNRESOLVED", {"action": "none", "error": error})
        settle_transaction(cur, layout, item)


def repair_insert_conflict(conn: connection, node: str, layout: ExceptionLayout,
                           item: PendingInsert, spock: bool, applied: AppliedRows) -> str:
    """Settle one failed INSERT in its own transaction; the outcome (updated/kept/...).

    Conflicts come newest first; ``applied`` holds the rows already given a
    (newer) remote row in this run, which older conflicts must not overwrite
    even when the clocks of the nodes disagree.

    A lost connection is raised (the node is gone for this run); every other
    failure is recorded on the command and the run goes on.
    """
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
            if not lock_pending(cur, layout, item):
                return BUSY  # settled meanwhile, or another repair has it
            outcome, status, details = _settle(cur, node, item, spock, applied)
            mark_command(cur, layout, item, status, details)
            settle_transaction(cur, layout, item)
        return outcome
    except (psycopg2.errors.LockNotAvailable, psycopg2.errors.QueryCanceled):
        return BUSY  # the row is in use; the next run tries again
    except psycopg2.Error as exc:
        if conn.closed or isinstance(exc, psycopg2.InterfaceError):
            raise
        lines = str(exc).strip().splitlines()
        error = lines[0] if lines else exc.__class__.__name__
    except AceError as exc:
        error = str(exc)
    _record_failure(conn, layout, item, error)
    return UNRESOLVED
