"""Spock's catalog objects on a plain PostgreSQL node, from their published definitions.

Spock cannot be installed on the test machines, so the objects ACE reads and
writes are created here as Spock creates them (see the Spock catalog
reference): the schema ``spock``, its three exception tables with their keys,
and a stand-in for ``spock.repair_mode(boolean)`` that records every call in
``spock.test_repair_mode_calls`` (with the calling transaction and its
``session_replication_role``) and mirrors the mode in the session setting
``ace_test.repair_mode``, so a trigger can see whether a write happened while
repair mode was on. :func:`drop_spock` removes all of it.

Layouts: ``"5.x"`` (Spock 4.0.2 and later: every table keyed with
``retry_errored_at``), ``"4.0"`` (no ``retry_errored_at`` anywhere) and
``"4.0.1"`` (the log has it, the status tables do not).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import node_sql

LAYOUTS = ("5.x", "4.0", "4.0.1")

_LOG_COLUMNS = """
    remote_xid bigint NOT NULL,
    local_origin oid,
    local_commit_ts timestamptz,
    table_schema text,
    table_name text,
    operation text,
    local_tup jsonb,
    remote_old_tup jsonb,
    remote_new_tup jsonb,
    ddl_statement text,
    ddl_user text,
    error_message text NOT NULL"""

_STATUS_COLUMNS = """
    remote_xid bigint NOT NULL,
    status text NOT NULL,
    resolved_at timestamptz,
    resolution_details jsonb"""

REPAIR_MODE_STANDIN = """
CREATE TABLE spock.test_repair_mode_calls (
    n serial PRIMARY KEY, enabled boolean, xid text, srr text);
CREATE FUNCTION spock.repair_mode(enabled boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spock.test_repair_mode_calls (enabled, xid, srr)
    VALUES (enabled, pg_current_xact_id()::text, current_setting('session_replication_role'));
    PERFORM set_config('ace_test.repair_mode', enabled::text, false);
    RETURN true;
END $$;
"""


def exception_ddl(layout: str = "5.x") -> str:
    """``CREATE`` statements for the exception tables of one Spock layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown Spock layout {layout!r}; use one of {LAYOUTS}")
    log_retry = layout in ("5.x", "4.0.1")
    status_retry = layout == "5.x"
    log_retry_col = "\n    retry_errored_at timestamptz NOT NULL," if log_retry else ""
    status_retry_col = "\n    retry_errored_at timestamptz NOT NULL," if status_retry else ""
    log_key = ", retry_errored_at" if log_retry else ""
    status_key = ", retry_errored_at" if status_retry else ""
    return f"""
CREATE SCHEMA IF NOT EXISTS spock;
CREATE TABLE spock.exception_log (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    command_counter integer NOT NULL,{log_retry_col}{_LOG_COLUMNS},
    PRIMARY KEY (remote_origin, remote_commit_ts, command_counter{log_key})
) WITH (user_catalog_table = true);
CREATE TABLE spock.exception_status (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,{status_retry_col}{_STATUS_COLUMNS},
    PRIMARY KEY (remote_origin, remote_commit_ts{status_key})
) WITH (user_catalog_table = true);
CREATE TABLE spock.exception_status_detail (
    remote_origin oid NOT NULL,
    remote_commit_ts timestamptz NOT NULL,
    command_counter integer NOT NULL,{status_retry_col}{_STATUS_COLUMNS},
    PRIMARY KEY (remote_origin, remote_commit_ts, command_counter{status_key}),
    FOREIGN KEY (remote_origin, remote_commit_ts{status_key})
        REFERENCES spock.exception_status (remote_origin, remote_commit_ts{status_key})
) WITH (user_catalog_table = true);
"""


def run_sql(dsn: str, *statements: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run statements in one transaction on a node, in UTC; the last one's rows, if any."""
    return node_sql.run_sql(dsn, *statements, params=params, options="-c TimeZone=UTC")


def install_spock(dsn: str, layout: str = "5.x", repair_mode: bool = True) -> None:
    """Create the exception tables (and, unless told not to, the repair-mode stand-in)."""
    drop_spock(dsn)
    run_sql(dsn, exception_ddl(layout), *([REPAIR_MODE_STANDIN] if repair_mode else []))


def drop_spock(dsn: str) -> None:
    run_sql(dsn, "DROP SCHEMA IF EXISTS spock CASCADE")


_JSON_TYPES = ((bool, "bool"), (int, "int4"), (float, "float8"), (str, "text"),
               (dict, "jsonb"), (list, "jsonb"))


def tuple_json(row: dict[str, Any] | None) -> str | None:
    """A row as Spock logs it: ``[{"attname", "atttype", "value"}, ...]``."""
    if row is None:
        return None
    return json.dumps([{"attname": name, "value": value,
                        "atttype": next((t for kind, t in _JSON_TYPES if isinstance(value, kind)),
                                        "text")}
                       for name, value in row.items()])


def log_exception(dsn: str, *, origin: int, commit_ts: datetime, xid: int,
                  table: Sequence[str] = ("public", "t"), operation: str = "INSERT",
                  new_row: dict[str, Any] | None = None, command_counter: int = 1,
                  retry_errored_at: datetime | None = None,
                  error_message: str = "duplicate key value violates unique constraint") -> None:
    """Add one ``spock.exception_log`` entry, as Spock does when it cannot apply a change.

    ``retry_errored_at`` is written only when the log has that column.
    """
    has_retry = run_sql(dsn, "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                             "'spock.exception_log'::regclass AND attname = 'retry_errored_at'")
    values: dict[str, Any] = {
        "remote_origin": origin, "remote_commit_ts": commit_ts, "command_counter": command_counter,
        "remote_xid": xid, "table_schema": table[0], "table_name": table[1],
        "operation": operation, "remote_new_tup": tuple_json(new_row),
        "error_message": error_message,
    }
    if has_retry[0][0]:
        values["retry_errored_at"] = retry_errored_at or commit_ts
    names = ", ".join(values)
    marks = ", ".join(f"%({n})s" for n in values)
    run_sql(dsn, f"INSERT INTO spock.exception_log ({names}) VALUES ({marks})", params=values)


def repair_mode_calls(dsn: str) -> list[tuple[bool, str, str]]:
    """Every ``spock.repair_mode`` call so far: (enabled, transaction id, replication role)."""
    return [(r[0], r[1], r[2]) for r in run_sql(
        dsn, "SELECT enabled, xid, srr FROM spock.test_repair_mode_calls ORDER BY n")]


# ----- replication metadata (read by repset-diff and spock-diff) ---------------------------

REPLICATION_DDL = """
CREATE SCHEMA IF NOT EXISTS spock;
CREATE TABLE spock.node (
    node_id oid PRIMARY KEY, node_name name NOT NULL UNIQUE, location text, country text,
    info jsonb) WITH (user_catalog_table = true);
CREATE TABLE spock.node_interface (
    if_id oid PRIMARY KEY, if_name name NOT NULL, if_nodeid oid REFERENCES spock.node,
    if_dsn text NOT NULL) WITH (user_catalog_table = true);
CREATE TABLE spock.local_node (
    node_id oid PRIMARY KEY REFERENCES spock.node,
    node_local_interface oid NOT NULL REFERENCES spock.node_interface)
    WITH (user_catalog_table = true);
CREATE TABLE spock.subscription (
    sub_id oid PRIMARY KEY, sub_name name NOT NULL UNIQUE,
    sub_origin oid NOT NULL REFERENCES spock.node, sub_target oid NOT NULL REFERENCES spock.node,
    sub_origin_if oid NOT NULL REFERENCES spock.node_interface,
    sub_target_if oid NOT NULL REFERENCES spock.node_interface,
    sub_enabled boolean NOT NULL DEFAULT true, sub_slot_name name NOT NULL,
    sub_replication_sets text[], sub_forward_origins text[],
    sub_apply_delay interval NOT NULL DEFAULT '0', sub_force_text_transfer boolean NOT NULL
    DEFAULT false, sub_skip_lsn pg_lsn, sub_skip_schema text[], sub_created_at timestamptz)
    WITH (user_catalog_table = true);
CREATE TABLE spock.replication_set (
    set_id oid PRIMARY KEY, set_nodeid oid NOT NULL, set_name name NOT NULL,
    replicate_insert boolean NOT NULL DEFAULT true, replicate_update boolean NOT NULL DEFAULT true,
    replicate_delete boolean NOT NULL DEFAULT true,
    replicate_truncate boolean NOT NULL DEFAULT true, UNIQUE (set_nodeid, set_name))
    WITH (user_catalog_table = true);
CREATE TABLE spock.replication_set_table (
    set_id oid NOT NULL, set_reloid regclass NOT NULL, set_att_list text[],
    set_row_filter pg_node_tree, PRIMARY KEY (set_id, set_reloid))
    WITH (user_catalog_table = true);
CREATE TABLE spock.replication_set_seq (
    set_id oid NOT NULL, set_seqoid regclass NOT NULL, PRIMARY KEY (set_id, set_seqoid))
    WITH (user_catalog_table = true);
CREATE TABLE spock.test_sub_status (sub_name name PRIMARY KEY, status text NOT NULL);
CREATE FUNCTION spock.sub_show_status(subscription_name name DEFAULT NULL,
    OUT subscription_name text, OUT status text, OUT provider_node text, OUT provider_dsn text,
    OUT slot_name text, OUT replication_sets text[], OUT forward_origins text[])
RETURNS SETOF record LANGUAGE sql AS $$
    SELECT s.sub_name::text, coalesce(t.status, CASE WHEN s.sub_enabled THEN 'replicating'
                                                    ELSE 'disabled' END),
           o.node_name::text, i.if_dsn, s.sub_slot_name::text, s.sub_replication_sets,
           s.sub_forward_origins
    FROM spock.subscription s JOIN spock.node o ON o.node_id = s.sub_origin
    JOIN spock.node_interface i ON i.if_id = s.sub_origin_if
    LEFT JOIN spock.test_sub_status t ON t.sub_name = s.sub_name
$$;
"""

DEFAULT_SETS = ("default", "default_insert_only", "ddl_sql")


def install_spock_mesh(dsns: Sequence[str], names: Sequence[str],
                       tables: Sequence[str] = (), only: Sequence[str] | None = None) -> None:
    """Spock's replication catalog on every node, as a healthy full mesh leaves it.

    Every node knows every node, has the three default sets (``tables`` in
    ``default``) and subscribes to every other node with set ``default``,
    ``default_insert_only`` and ``ddl_sql`` and no forward origins. ``only``
    limits the installation to some of the nodes (the others are still known).
    """
    ids = {name: 1000 + i for i, name in enumerate(names)}
    for dsn, me in zip(dsns, names, strict=True):
        if only is not None and me not in only:
            continue
        drop_spock(dsn)
        statements = [REPLICATION_DDL]
        for name, nid in ids.items():
            statements.append(f"INSERT INTO spock.node VALUES ({nid}, '{name}', NULL, NULL, NULL)")
            statements.append(f"INSERT INTO spock.node_interface VALUES ({nid}, '{name}', {nid},"
                              f" 'host=127.0.0.1 dbname=acedb')")
        statements.append(f"INSERT INTO spock.local_node VALUES ({ids[me]}, {ids[me]})")
        for k, set_name in enumerate(DEFAULT_SETS):
            statements.append(f"INSERT INTO spock.replication_set (set_id, set_nodeid, set_name)"
                              f" VALUES ({ids[me] * 10 + k}, {ids[me]}, '{set_name}')")
        for table in tables:
            statements.append(f"INSERT INTO spock.replication_set_table (set_id, set_reloid)"
                              f" VALUES ({ids[me] * 10}, '{table}')")
        for other, oid in ids.items():
            if other == me:
                continue
            statements.append(
                "INSERT INTO spock.subscription (sub_id, sub_name, sub_origin, sub_target,"
                " sub_origin_if, sub_target_if, sub_slot_name, sub_replication_sets,"
                f" sub_forward_origins) VALUES ({oid * 10000 + ids[me]}, 'sub_{me}_{other}',"
                f" {oid}, {ids[me]}, {oid}, {ids[me]}, 'slot_{me}_{other}',"
                " '{default,default_insert_only,ddl_sql}', '{}')")
        run_sql(dsn, *statements)
