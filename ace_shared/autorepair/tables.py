"""Spock's exception tables as auto-repair uses them.

Spock logs every replicated change it could not apply in
``spock.exception_log``. Auto-repair keeps its own bookkeeping in
``spock.exception_status`` (one row per failed remote transaction) and
``spock.exception_status_detail`` (one row per failed command): a poll copies
new log entries there as PENDING, a repair marks them RESOLVED or UNRESOLVED.

Two layouts exist. Spock 4.0.2 and later key every table with
``retry_errored_at`` (each retry of a transaction is a separate failure);
older 4.0 releases lack the column, in the status tables at least, and key
them by (remote_origin, remote_commit_ts[, command_counter]). The layout is
read from the catalog on each node, so one cluster may mix versions. When the
log has several retries of a command but the status tables cannot tell them
apart, the latest retry is the one repaired.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.errors import NodeSkippedError

LOG = sql.SQL("spock.exception_log")
STATUS = sql.SQL("spock.exception_status")
DETAIL = sql.SQL("spock.exception_status_detail")
TABLES = ("exception_log", "exception_status", "exception_status_detail")
RETRY = "retry_errored_at"
POLL_LOCK = 0x4143_4552  # advisory lock key held by a poll while it copies ("ACER")


@dataclass(frozen=True)
class ExceptionLayout:
    """Which of the exception tables have ``retry_errored_at``."""

    log_retry: bool
    status_retry: bool

    @property
    def transaction_key(self) -> tuple[str, ...]:
        """Primary key of ``exception_status``."""
        return ("remote_origin", "remote_commit_ts") + ((RETRY,) if self.status_retry else ())

    @property
    def command_key(self) -> tuple[str, ...]:
        """Primary key of ``exception_status_detail``."""
        return (*self.transaction_key, "command_counter")

    def from_log(self, column: str) -> sql.Composable:
        """A status-table column as read from the log row ``l`` (an epoch if the log lacks it)."""
        if column == RETRY and not self.log_retry:
            return sql.SQL("'epoch'::timestamptz")
        return sql.SQL("l.{}").format(sql.Identifier(column))


def detect_layout(cur: cursor, node: str) -> ExceptionLayout:
    """Read the layout from the catalog; :class:`NodeSkippedError` if a table is missing."""
    cur.execute("SELECT c.relname, EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid "
                "AND a.attname = %s AND NOT a.attisdropped) "
                "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'spock' AND c.relname = ANY(%s)", (RETRY, list(TABLES)))
    found = dict(cur.fetchall())
    missing = [t for t in TABLES if t not in found]
    if missing:
        raise NodeSkippedError(
            f"Node {node} has no Spock exception tables ({', '.join('spock.' + t for t in missing)} "
            "missing); install Spock in this database or leave the node out of auto-repair.")
    if found["exception_status"] != found["exception_status_detail"]:
        raise NodeSkippedError(
            f"Node {node} has spock.exception_status and spock.exception_status_detail from "
            "different Spock versions (only one has retry_errored_at); finish the Spock upgrade.")
    return ExceptionLayout(log_retry=found["exception_log"], status_retry=found["exception_status"])


def _cols(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _matches(alias: str, names: tuple[str, ...], source: Any) -> sql.Composable:
    """``alias.k = <source of k>`` for every column ``k``, joined by AND."""
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}").format(sql.Identifier(alias), sql.Identifier(n), source(n))
        for n in names)


def _log_rows_of_command(layout: ExceptionLayout) -> sql.Composable:
    """Match log rows ``l`` to the command row ``d`` (every retry when ``d`` has no retry time)."""
    names = tuple(n for n in layout.command_key if n != RETRY or layout.log_retry)
    return _matches("l", names, lambda n: sql.SQL("d.{}").format(sql.Identifier(n)))


def _copy(cur: cursor, target: sql.Composable, key: tuple[str, ...],
          layout: ExceptionLayout) -> int:
    from_log = sql.SQL(", ").join(layout.from_log(n) for n in key)
    cur.execute(sql.SQL(
        "INSERT INTO {target} ({cols}, remote_xid, status) "
        "SELECT DISTINCT ON ({src}) {src}, l.remote_xid, 'PENDING' FROM {log} l "
        "WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {match}) "
        "ORDER BY {src}").format(
            target=target, cols=_cols(key), src=from_log, log=LOG,
            match=_matches("t", key, layout.from_log)))
    return int(cur.rowcount)


def copy_new_exceptions(cur: cursor, layout: ExceptionLayout) -> tuple[int, int]:
    """Copy log entries not yet in the status tables, as PENDING; (transactions, commands) added.

    Idempotent: entries already in the status tables (by their primary keys)
    are skipped. PostgreSQL refuses ``ON CONFLICT`` on these tables (they are
    ``user_catalog_table``s), so polls of one database take turns on a
    transaction-level advisory lock instead, and never race to insert a row.
    """
    cur.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (POLL_LOCK,))
    transactions = _copy(cur, STATUS, layout.transaction_key, layout)
    commands = _copy(cur, DETAIL, layout.command_key, layout)
    return transactions, commands


@dataclass(frozen=True)
class PendingInsert:
    """A PENDING failed INSERT: its status-table key and the remote row it tried to insert."""

    key: dict[str, Any]
    table_schema: str | None
    table_name: str | None
    remote_new_tup: Any

    @property
    def remote_commit_ts(self) -> datetime:
        stamp: datetime = self.key["remote_commit_ts"]
        return stamp


def pending_inserts(cur: cursor, layout: ExceptionLayout) -> list[PendingInsert]:
    """The PENDING failed INSERTs, newest remote commit first.

    Newest first, so that when several remote rows collided with one local
    row, the newest one is applied and the older ones then find a newer
    local row and are kept out (last commit wins).
    """
    latest = sql.SQL("ORDER BY l.retry_errored_at DESC") if layout.log_retry else sql.SQL("")
    cur.execute(sql.SQL(
        "SELECT {dcols}, l.table_schema, l.table_name, l.remote_new_tup::text "
        "FROM {detail} d CROSS JOIN LATERAL (SELECT * FROM {log} l WHERE {match} {latest} "
        "LIMIT 1) l WHERE d.status = 'PENDING' AND pg_catalog.upper(l.operation) = 'INSERT' "
        "ORDER BY d.remote_commit_ts DESC, d.command_counter DESC").format(
            dcols=sql.SQL(", ").join(sql.SQL("d.{}").format(sql.Identifier(n))
                                     for n in layout.command_key),
            detail=DETAIL, log=LOG, latest=latest, match=_log_rows_of_command(layout)))
    width = len(layout.command_key)
    return [PendingInsert(dict(zip(layout.command_key, row[:width], strict=True)),
                          row[width], row[width + 1],
                          None if row[width + 2] is None else json.loads(row[width + 2]))
            for row in cur.fetchall()]


def count_other_pending(cur: cursor, layout: ExceptionLayout) -> int:
    """PENDING commands that are not INSERTs: auto-repair leaves these to an operator."""
    cur.execute(sql.SQL(
        "SELECT pg_catalog.count(*) FROM {detail} d WHERE d.status = 'PENDING' AND NOT EXISTS "
        "(SELECT 1 FROM {log} l WHERE {match} AND pg_catalog.upper(l.operation) = 'INSERT')").format(
            detail=DETAIL, log=LOG, match=_log_rows_of_command(layout)))
    return int(cur.fetchone()[0])


def _where(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(n), sql.Placeholder(n))
                                 for n in names)


def lock_pending(cur: cursor, layout: ExceptionLayout, item: PendingInsert) -> bool:
    """Lock the command's row if it is still PENDING and no other repair holds it."""
    cur.execute(sql.SQL("SELECT 1 FROM {} WHERE {} AND status = 'PENDING' "
                        "FOR UPDATE SKIP LOCKED").format(DETAIL, _where(layout.command_key)),
                item.key)
    return cur.fetchone() is not None


def mark_command(cur: cursor, layout: ExceptionLayout, item: PendingInsert, status: str,
                 details: dict[str, Any]) -> None:
    """Set a still-PENDING command's status and resolution details (and when it was resolved)."""
    cur.execute(sql.SQL(
        "UPDATE {} SET status = %(ace_status)s, resolution_details = %(ace_details)s::pg_catalog.jsonb, "
        "resolved_at = CASE WHEN %(ace_status)s = 'RESOLVED' THEN pg_catalog.now() END "
        "WHERE {} AND status = 'PENDING'").format(DETAIL, _where(layout.command_key)),
        {**item.key, "ace_status": status, "ace_details": json.dumps(details)})


def settle_transaction(cur: cursor, layout: ExceptionLayout, item: PendingInsert) -> None:
    """Once none of a PENDING transaction's commands is PENDING, settle the transaction too.

    RESOLVED when every command was resolved, UNRESOLVED otherwise. A
    transaction an operator has already settled is left as it is.
    """
    key = layout.transaction_key
    cur.execute(sql.SQL(
        "WITH d AS (SELECT pg_catalog.count(*) AS n, pg_catalog.count(*) FILTER (WHERE status = 'PENDING') AS pending, "
        "pg_catalog.count(*) FILTER (WHERE status = 'RESOLVED') AS resolved FROM {detail} WHERE {where}) "
        "UPDATE {status} s SET "
        "status = CASE WHEN d.resolved = d.n THEN 'RESOLVED' ELSE 'UNRESOLVED' END, "
        "resolved_at = CASE WHEN d.resolved = d.n THEN pg_catalog.now() END, "
        "resolution_details = pg_catalog.jsonb_build_object('action', 'auto-repair', 'commands', d.n, "
        "'resolved_commands', d.resolved) "
        "FROM d WHERE {swhere} AND s.status = 'PENDING' AND d.pending = 0 AND d.n > 0").format(
            detail=DETAIL, status=STATUS, where=_where(key),
            swhere=_matches("s", key, sql.Placeholder)),
        {k: item.key[k] for k in key})
