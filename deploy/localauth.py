"""How a scratch cluster lets ACE log in as the roles it serves, and what repairs may do.

This is the database side of docs/security.md, for the nodes deploy/localcluster.py
runs: the group ``ace_callers`` (the roles ACE's certificate may log in as, named
by a ``pg_hba.conf`` line), one ``pg_ident.conf`` line per served role (PostgreSQL
15 has no ``+group`` there), the group ``ace_repair`` holding the narrow
grants that keep a repair's writes from replicating back out, and the rights of
ACE's own login (the cluster file's ``db_user``), which is not a superuser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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

PRESERVE_GROUP = "ace_preserve_origin"
# --preserve-origin: stamp a repair's transaction with another node's origin and commit time.
# A separate group: its members can give their own writes any commit time (docs/security.md).
PRESERVE_GRANTS = (
    "GRANT EXECUTE ON FUNCTION "
    "pg_catalog.pg_replication_origin_xact_setup(pg_catalog.pg_lsn, pg_catalog.timestamptz), "
    "pg_catalog.pg_replication_origin_xact_reset() TO ace_preserve_origin",
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


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (PostgreSQL's rule: double every ``"``).

    Plain text, not a psycopg2 ``sql.Identifier``, so that the same statements
    can be run here and written into a script (:func:`init_script`)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a SQL string constant (``standard_conforming_strings`` is on)."""
    return "'" + text.replace("'", "''") + "'"


def operator_grants(user: str, dbname: str) -> list[str]:
    """What the operator path (CLI, scheduled jobs, auto-repair) needs, and no more.

    - ``pg_read_all_data``: diff, rerun and the checks read every table (and the
      ``spock`` schema) whoever owns it;
    - ``pg_write_all_data``: repair and auto-repair write every table;
    - ``ace_repair``: a repair's writes must not replicate back out;
    - ``CONNECT``, ``TEMPORARY`` (a repair stages rows in a temporary table) and
      ``CREATE`` on the database (``ace mtree init`` creates the schema ``ace_mtree``);
    - ``subconninfo`` of ``pg_subscription`` (see :func:`conninfo_grant`);
    - ``ace_preserve_origin`` (``table-repair --preserve-origin``) and ``SELECT`` on
      ``pg_replication_origin_status`` (``--recovery-mode`` compares how far each
      survivor applied the failed node's stream).
    """
    return [
        f"GRANT pg_read_all_data, pg_write_all_data TO {ident(user)}",
        f"GRANT {ident(REPAIR_GROUP)} TO {ident(user)}",
        f"GRANT {ident(PRESERVE_GROUP)} TO {ident(user)}",
        f"GRANT SELECT ON pg_catalog.pg_replication_origin_status TO {ident(user)}",
        # (the view calls this function, whose EXECUTE is checked as the reader)
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() "
        f"TO {ident(user)}",
        f"GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {ident(dbname)} TO {ident(user)}",
        conninfo_grant(user),
    ]


def conninfo_grant(user: str) -> str:
    """Let ``user`` read native subscriptions' connection strings, in the current database.

    spock-diff names a native subscription's provider by its host, port and
    database; only superusers may read the column otherwise. It may hold the
    subscription's password, so the grant is per database and explicit.
    """
    return f"GRANT SELECT (subconninfo) ON pg_catalog.pg_subscription TO {ident(user)}"


def create_group(name: str) -> str:
    """Create a NOLOGIN group role unless it exists."""
    return (f"DO $$ BEGIN CREATE ROLE {ident(name)} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$")


def operator_login(user: str, password: str, exists: bool = False) -> str:
    """Create ACE's login, or (``exists``) demote an earlier superuser of that name."""
    verb = "ALTER" if exists else "CREATE"
    return f"{verb} ROLE {ident(user)} WITH {OPERATOR_ATTRIBUTES} PASSWORD {literal(password)}"


def node_setup(user: str, dbname: str) -> list[str]:
    """The groups and grants of a node, once ACE's login and the database exist."""
    return [*(create_group(g) for g in (CALLERS_GROUP, REPAIR_GROUP, PRESERVE_GROUP)),
            *REPAIR_GRANTS, *PRESERVE_GRANTS, SPOCK_REPAIR_GRANT,
            *operator_grants(user, dbname)]


def init_script(user: str, password: str, dbname: str) -> str:
    """The same set-up as one SQL script, for nodes another tool starts.

    The postgres images of ``docker-compose.yml`` run it once, as their
    superuser, from ``/docker-entrypoint-initdb.d``. ACE's login owns the demo
    database there, as on scratch clusters, so it can load the demo data.
    """
    lines = ["-- Written by: python deploy/localauth.py init-script (edits are lost).",
             "-- ACE's login, no superuser (docs/security.md), and the grants it uses.",
             operator_login(user, password) + ";",
             f"ALTER DATABASE {ident(dbname)} OWNER TO {ident(user)};",
             *(f"{s};" for s in node_setup(user, dbname))]
    return "\n".join(lines) + "\n"


def serve_statements(role: str, repair: bool) -> list[str]:
    """Make ``role`` a LOGIN member of ``ace_callers`` (and of ``ace_repair`` if asked)."""
    out = [
        f"DO $$ BEGIN CREATE ROLE {ident(role)} LOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"ALTER ROLE {ident(role)} LOGIN",
        f"GRANT {ident(CALLERS_GROUP)} TO {ident(role)}",
    ]
    if repair:
        out.append(f"GRANT {ident(REPAIR_GROUP)} TO {ident(role)}")
    return out


def pg_ident(ace_cn: str, roles: Sequence[str]) -> str:
    """``pg_ident.conf``: map ACE's certificate (common name ``ace_cn``) to each served role."""
    lines = "".join(f"ace   {ace_cn}   {role}\n" for role in roles)
    return ("# Written by deploy/localcluster.py; edits are lost.\n"
            "# MAPNAME  SYSTEM-USERNAME (ACE's certificate)  PG-USERNAME (a served role)\n"
            + lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the SQL that sets a node up for ACE.")
    sub = parser.add_subparsers(dest="command", required=True)
    script = sub.add_parser("init-script", help=init_script.__doc__.split("\n")[0])
    script.add_argument("--user", default="ace")
    script.add_argument("--password", default="ace_pw")
    script.add_argument("--dbname", default="acedb")
    args = parser.parse_args(argv)
    sys.stdout.write(init_script(args.user, args.password, args.dbname))
    return 0


if __name__ == "__main__":
    sys.exit(main())
