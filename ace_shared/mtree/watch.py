"""The event trigger that notices ``ALTER TABLE`` of a tracked table: a superuser's step.

PostgreSQL lets only a superuser create an event trigger, and it then runs in
every session's ``ALTER TABLE``, a superuser's too. So the superuser's
``mtree init`` evaluates nothing in ``ace_mtree``, which a role other than ACE's
login may have made or may write (the schema, the catalogue of trees, a tree
builder's tables): everything here lives in ``ace_mtree_admin``, a schema only
a superuser may own, and the function reads only ``pg_catalog``.

- The function is ``SECURITY DEFINER`` owned by ``ace_mtree_writer`` (``NOLOGIN``,
  ``NOINHERIT``), which may only write ``ace_mtree_admin.altered``.
- For every table an ``ALTER TABLE`` touched that carries ACE's tracking
  triggers (a catalogue fact), it stores the ``ALTER``'s transaction id (64
  bits: never reused, and unlike a sequence never replicated) in ``altered``:
  one row per table, owned by the superuser, with no trigger, default or type
  anyone else controls.
- A tree's catalogue row keeps the number its table had when the tree was
  built; a tree whose table has another number now is refused as altered.
"""

from __future__ import annotations

from psycopg2.extensions import cursor

from ace_shared.errors import TableError

ADMIN_SCHEMA = "ace_mtree_admin"
WRITER_ROLE = "ace_mtree_writer"
EVENT_TRIGGER = "ace_mtree_alter_table"

# NOLOGIN, and NOINHERIT so that a grant made to it by mistake later does not widen what
# the function may do.
WRITER_SQL = """
DO $ace_role$ BEGIN
  CREATE ROLE ace_mtree_writer NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object THEN NULL;
END $ace_role$;
ALTER ROLE ace_mtree_writer NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION NOBYPASSRLS;
"""

# Unlogged like ACE's other tables: never replicated (table oids are per node), and a
# crash, which empties it, empties every tree too.
SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS ace_mtree_admin;
REVOKE ALL ON SCHEMA ace_mtree_admin FROM PUBLIC;
GRANT USAGE ON SCHEMA ace_mtree_admin TO PUBLIC;
CREATE UNLOGGED TABLE IF NOT EXISTS ace_mtree_admin.altered (
    table_oid pg_catalog.oid PRIMARY KEY,
    seq       pg_catalog.int8 NOT NULL
);
REVOKE ALL ON ace_mtree_admin.altered FROM PUBLIC;
GRANT SELECT ON ace_mtree_admin.altered TO PUBLIC;
GRANT USAGE ON SCHEMA ace_mtree_admin TO ace_mtree_writer;
GRANT SELECT, INSERT, UPDATE ON ace_mtree_admin.altered TO ace_mtree_writer;
"""

# Errors are only warned about: this runs inside every ALTER TABLE of the database.
FUNCTION_SQL = """
DROP EVENT TRIGGER IF EXISTS ace_mtree_alter_table;
DROP FUNCTION IF EXISTS ace_mtree_admin.on_alter_table();
CREATE FUNCTION ace_mtree_admin.on_alter_table() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $ace_ddl$
DECLARE
  changed pg_catalog.oid;
BEGIN
  FOR changed IN SELECT DISTINCT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
                  WHERE c.object_type OPERATOR(pg_catalog.=) 'table'
                    AND EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                 WHERE t.tgrelid OPERATOR(pg_catalog.=) c.objid
                                   AND t.tgname OPERATOR(pg_catalog.~~) 'ace\\_mtree\\_%') LOOP
    INSERT INTO ace_mtree_admin.altered AS a (table_oid, seq)
      VALUES (changed, pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.int8)
      ON CONFLICT (table_oid) DO UPDATE SET seq = EXCLUDED.seq;
  END LOOP;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'ACE could not mark a Merkle tree stale: %', SQLERRM;
END
$ace_ddl$;
REVOKE ALL ON FUNCTION ace_mtree_admin.on_alter_table() FROM PUBLIC;
ALTER FUNCTION ace_mtree_admin.on_alter_table() OWNER TO ace_mtree_writer;
CREATE EVENT TRIGGER ace_mtree_alter_table ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION ace_mtree_admin.on_alter_table();
ALTER EVENT TRIGGER ace_mtree_alter_table ENABLE ALWAYS;
"""

# Whether a relation in ace_mtree_admin, and the schema, belong to superusers: only then is
# it ACE's administrator's and safe to read or trust.
_SUPERUSERS_OWN_SQL = """
SELECT c.relkind, rs.rolsuper AND rt.rolsuper
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_roles rs ON rs.oid OPERATOR(pg_catalog.=) n.nspowner
JOIN pg_catalog.pg_roles rt ON rt.oid OPERATOR(pg_catalog.=) c.relowner
WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s)
"""


def _schema_owner(cur: cursor) -> tuple[str, bool] | None:
    cur.execute("SELECT pg_catalog.pg_get_userbyid(n.nspowner), r.rolsuper "
                "FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r "
                "ON r.oid OPERATOR(pg_catalog.=) n.nspowner "
                "WHERE n.nspname OPERATOR(pg_catalog.=) %s", (ADMIN_SCHEMA,))
    row = cur.fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def _refuse_foreign(cur: cursor, node: str) -> None:
    """Refuse an ``ace_mtree_admin`` (or a relation in it) that a non-superuser owns."""
    owner = _schema_owner(cur)
    if owner is not None and not owner[1]:
        raise TableError(
            f"The schema {ADMIN_SCHEMA} on node {node} belongs to {owner[0]}, who is not a "
            "superuser, so the event trigger would run that role's code in every session; "
            f"drop it (DROP SCHEMA {ADMIN_SCHEMA} CASCADE) and run this again.")
    cur.execute(_SUPERUSERS_OWN_SQL, (f"{ADMIN_SCHEMA}.altered",))
    row = cur.fetchone()
    if row is not None and (not row[1] or str(row[0]) != "r"):
        raise TableError(
            f"{ADMIN_SCHEMA}.altered on node {node} is not what ACE makes there (a superuser's "
            "table), so ACE will not use it; drop it and run this again.")


def install(cur: cursor, node: str) -> None:
    """The superuser's part of ``mtree init``: the writer role, its schema, the event trigger.

    Reads nothing outside ``pg_catalog`` and ``ace_mtree_admin``.
    """
    _refuse_foreign(cur, node)
    cur.execute(WRITER_SQL)
    cur.execute(SCHEMA_SQL)
    _refuse_foreign(cur, node)
    cur.execute(FUNCTION_SQL)


def altered_seq(cur: cursor, table_oid: int) -> int:
    """The number the watch last stored for the table: 0 if none, or no trusted watch."""
    cur.execute(_SUPERUSERS_OWN_SQL, (f"{ADMIN_SCHEMA}.altered",))
    row = cur.fetchone()
    if row is None or str(row[0]) != "r" or not row[1]:
        return 0
    cur.execute("SELECT seq FROM ace_mtree_admin.altered WHERE table_oid "
                "OPERATOR(pg_catalog.=) %s", (table_oid,))
    found = cur.fetchone()
    return 0 if found is None else int(found[0])
