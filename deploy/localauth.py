"""How a scratch cluster lets ACE log in as the roles it serves, and what repairs may do.

This is the database side of docs/security.md, for the nodes deploy/localcluster.py
runs: the group ``ace_callers`` (the roles ACE's certificate may log in as, named
by a ``pg_hba.conf`` line), one ``pg_ident.conf`` line per served role (PostgreSQL
15 has no ``+group`` there), the group ``ace_repair`` holding the narrow
grants that keep a repair's writes from replicating back out, and the rights of
ACE's own login (the cluster file's ``db_user``), which is not a superuser.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg2 import sql

CALLERS_GROUP = "ace_callers"
REPAIR_GROUP = "ace_repair"
# What a role needs to keep a repair from replicating back out, and nothing more.
REPAIR_GRANTS = (
    "GRANT SET ON PARAMETER session_replication_role TO ace_repair",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_oid(text), "
    "pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_drop(text), "
    "pg_catalog.pg_replication_origin_session_setup(text), "
    "pg_catalog.pg_replication_origin_session_reset() TO ace_repair",
)


# Spock's repair mode, granted only where Spock is installed (the function is what is called).
SPOCK_REPAIR_GRANT = """DO $$ BEGIN
  IF to_regprocedure('spock.repair_mode(boolean)') IS NOT NULL THEN
    GRANT USAGE ON SCHEMA spock TO ace_repair;
    GRANT EXECUTE ON FUNCTION spock.repair_mode(boolean) TO ace_repair;
  END IF;
END $$"""
# The attributes of ACE's own login: everything a superuser-like attribute grants is off.
OPERATOR_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS"


def operator_grants(user: str, dbname: str) -> list[sql.Composable]:
    """What the operator path (CLI, scheduled jobs, auto-repair) needs, and no more.

    - ``pg_read_all_data``: diff, rerun and the checks read every table (and the
      ``spock`` schema) whoever owns it;
    - ``pg_write_all_data``: repair and auto-repair write every table;
    - ``ace_repair``: a repair's writes must not replicate back out;
    - ``CONNECT``, ``TEMPORARY`` (a repair stages rows in a temporary table) and
      ``CREATE`` on the database (``ace mtree init`` creates the schema ``ace_mtree``);
    - ``subconninfo`` of ``pg_subscription`` (see :func:`conninfo_grant`).
    """
    ident = sql.Identifier(user)
    return [
        sql.SQL("GRANT pg_read_all_data, pg_write_all_data TO {}").format(ident),
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(REPAIR_GROUP), ident),
        sql.SQL("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), ident),
        conninfo_grant(user),
    ]


def conninfo_grant(user: str) -> sql.Composable:
    """Let ``user`` read native subscriptions' connection strings, in the current database.

    spock-diff names a native subscription's provider by its host, port and
    database; only superusers may read the column otherwise. It may hold the
    subscription's password, so the grant is per database and explicit.
    """
    return sql.SQL("GRANT SELECT (subconninfo) ON pg_catalog.pg_subscription TO {}").format(
        sql.Identifier(user))


def create_group(name: str) -> sql.Composable:
    """Create a NOLOGIN group role unless it exists."""
    return sql.SQL("DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
                   "EXCEPTION WHEN duplicate_object THEN NULL; END $$").format(sql.Identifier(name))


def serve_statements(role: str, repair: bool) -> list[sql.Composable]:
    """Make ``role`` a LOGIN member of ``ace_callers`` (and of ``ace_repair`` if asked)."""
    ident = sql.Identifier(role)
    out = [
        sql.SQL("DO $$ BEGIN CREATE ROLE {} LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$").format(ident),
        sql.SQL("ALTER ROLE {} LOGIN").format(ident),
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(CALLERS_GROUP), ident),
    ]
    if repair:
        out.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier(REPAIR_GROUP), ident))
    return out


def pg_ident(ace_cn: str, roles: Sequence[str]) -> str:
    """``pg_ident.conf``: map ACE's certificate (common name ``ace_cn``) to each served role."""
    lines = "".join(f"ace   {ace_cn}   {role}\n" for role in roles)
    return ("# Written by deploy/localcluster.py; edits are lost.\n"
            "# MAPNAME  SYSTEM-USERNAME (ACE's certificate)  PG-USERNAME (a served role)\n"
            + lines)
