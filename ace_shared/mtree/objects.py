"""The objects a Merkle tree keeps on a node, in ACE's own schema ``ace_mtree``.

Per tracked table (named by :func:`tree_key`, the same on every node):

- ``ace_mtree.trees``: one row per tree: the table, its shape, block size, build time.
- ``blocks_<key>``: the leaves. Block ``i`` holds the keys ``[lower_i, lower_{i+1})``;
  block 0 has no lower bound and the last no upper bound. Lower bounds are
  stored in columns of the key's own types and collations, so a key finds its
  block with the table's own ordering (an index scan, not a text comparison).
  Each block keeps its row count and the ``bit_xor`` of its rows' hashes
  (:func:`ace_shared.diff.queries.row_hash`, the exact hash table-diff uses).
- ``inner_<key>``: the inner levels, 16 children per node, up to one root.
- ``keys_<key>``: the keys folded in since each leaf last agreed on the nodes
  compared (see :mod:`ace_shared.mtree.kept`), so a re-check of a leaf that
  differs can probe those keys instead of reading the leaf's rows.
- ``log_<key>``: changes not yet folded into the tree. A trigger on the table
  appends, for every row a statement removes or adds, its key, ``-1``/``+1`` and
  its row hash. Because XOR undoes itself, a block's hash is brought up to date
  from the log alone, without reading the table: ``hash ^= h`` for every
  logged row version, ``count += sign``.

Why these choices:

- Row-level triggers (one per event), ``ENABLE ALWAYS``, catch every write: the
  application's, PostgreSQL's logical replication apply (and Spock's and
  pglogical's), which fire only row triggers and run with
  ``session_replication_role = replica``, and ACE's own repairs, which run that
  way too. Measured per single-row statement, it costs about half what
  statement-level triggers with transition tables do (those pay for the
  transition tables on every statement, even an empty one). A ``TRUNCATE``
  trigger logs a marker, after which the update hashes the node's leaves again.
- Row hashes are computed inside the trigger function under the pinned
  settings of ACE's sessions that the table's column types depend on (the
  function's own ``SET`` clauses), so the text of a float or an interval is
  what table-diff would hash, whatever the writer's session says.
- Every table here is ``UNLOGGED``: no WAL, so no logical replication of any
  kind ever sends them to another node, and writes cost less. A crash empties
  them; a tree without its row is then missing, never trusted.
- The trigger functions are ``SECURITY DEFINER`` owned by the table's owner, who
  is granted ``INSERT`` on that table's log only: writers need no rights in
  ``ace_mtree``, and whatever of the owner's code runs while a row is logged (a
  cast of her own type to text) runs as her, never as the writer or as ACE.
- No table here has a column of a type the table's owner controls: keys are
  stored in their built-in base types (:mod:`ace_shared.mtree.keytypes`), so
  inserting into a log or the leaves, and reading them, runs no domain check or
  default. ACE's sessions fold, walk and rebuild without running her code.
- A tree's tables belong to its builder, and ``ace_mtree`` to whoever made it:
  every transaction that touches them first locks them and checks in
  ``pg_catalog`` that nothing on them can run code (:mod:`ace_shared.mtree.trust`);
  ``init`` refuses an ``ace_mtree`` that another role made. The catalogue has
  no column defaults, so writing it evaluates nothing.
- The event trigger that notices ``ALTER TABLE`` is a superuser's and lives in
  ``ace_mtree_admin`` (:mod:`ace_shared.mtree.watch`): it reads only
  ``pg_catalog`` and writes only its own table, never anything in ``ace_mtree``.
- Every function here names everything it uses by schema (``pg_catalog.``,
  ``OPERATOR(pg_catalog.=)``, ``ace_mtree.``), so no search path can redirect
  it; the event trigger's function also pins ``search_path``. The row triggers
  do not: setting it on every call lost 40% of pgbench's throughput
  (docs/mtree.md, Costs), and they name nothing unqualified.
- ``trees.format_version`` says which layout a tree was built with: a tree of
  an older layout (whose logs held the key's own types) is refused until built
  again.
"""

from __future__ import annotations

import hashlib
import secrets

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.errors import TableError
from ace_shared.mtree import watch
from ace_shared.nodes.connection import PINNED_SETTINGS
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape

SCHEMA = "ace_mtree"
TRIGGER_PREFIX = "ace_mtree_"
WRITER_ROLE = watch.WRITER_ROLE  # owns the event trigger's function (in ace_mtree_admin)
# the layout of a tree's tables: 2 stores keys in their built-in base types (1 did not),
# 3 keeps the keys changed since each leaf last agreed (2 did not)
FORMAT_VERSION = 3
KINDS = ("blocks", "inner", "log", "keys")  # a tree's tables: obj(kind, key)
# the settings that change how a value prints, pinned inside the trigger function too
_FUNCTION_SETTINGS = ("DateStyle", "TimeZone", "extra_float_digits", "bytea_output",
                      "IntervalStyle", "lc_monetary")
# log rows with these signs mark events after which the tree cannot be trusted
TRUNCATED = 0
ALTERED = 2  # written by the watch of earlier versions; still refused when found


def tree_key(table: TableName) -> str:
    """A short name for a table's tree, the same on every node."""
    digest = hashlib.sha256(f"{table.schema}\x00{table.table}".encode()).hexdigest()
    return digest[:16]


TREES = sql.SQL("{}.trees").format(sql.Identifier(SCHEMA))  # the catalogue: a row per tree


def obj(kind: str, key: str) -> sql.Composable:
    """``ace_mtree.<kind>_<key>``, quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(f"{kind}_{key}"))


def shape_signature(shape: TableShape) -> str:
    """What a tree's hashes depend on: the columns in order, their types, and the key."""
    text = "|".join(f"{c.name}:{c.type_sql}:{c.collation_sql or ''}" for c in shape.columns)
    return hashlib.sha256(f"{text}#{','.join(shape.key)}".encode()).hexdigest()


INIT_SQL = """
CREATE SCHEMA IF NOT EXISTS ace_mtree;
REVOKE ALL ON SCHEMA ace_mtree FROM PUBLIC;
CREATE UNLOGGED TABLE IF NOT EXISTS ace_mtree.trees (
    tree_key     text PRIMARY KEY,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    table_oid    oid NOT NULL,
    shape_sig    text NOT NULL,
    block_rows   integer NOT NULL,
    bounds_sig   text NOT NULL,
    built_at     timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    format_version integer NOT NULL,
    altered_seq  bigint NOT NULL,
    UNIQUE (schema_name, table_name)
);
REVOKE ALL ON ace_mtree.trees FROM PUBLIC;
"""
# A catalogue made by an earlier version lacks the layout column (its trees are layout 1)
# and the ALTER TABLE number (its trees predate the watch that stores it), and has column
# defaults: the catalogue has none, so that writing it runs no expression (trust.py).
UPGRADE_SQL = """
ALTER TABLE ace_mtree.trees ADD COLUMN IF NOT EXISTS format_version integer NOT NULL DEFAULT 1;
ALTER TABLE ace_mtree.trees ADD COLUMN IF NOT EXISTS altered_seq bigint NOT NULL DEFAULT 0;
"""
DROP_DEFAULTS_SQL = """
ALTER TABLE ace_mtree.trees ALTER COLUMN format_version DROP DEFAULT,
  ALTER COLUMN altered_seq DROP DEFAULT, ALTER COLUMN built_at DROP DEFAULT,
  ALTER COLUMN updated_at DROP DEFAULT;
"""
_CURRENT_COLUMNS = ("format_version", "altered_seq")


def _has_current_columns(cur: cursor) -> bool:
    cur.execute("SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute WHERE attrelid "
                "OPERATOR(pg_catalog.=) 'ace_mtree.trees'::pg_catalog.regclass AND attname "
                "OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.name[]) AND NOT attisdropped",
                (list(_CURRENT_COLUMNS),))
    return int(cur.fetchone()[0]) == len(_CURRENT_COLUMNS)


def _is_superuser(cur: cursor) -> bool:
    cur.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname "
                "OPERATOR(pg_catalog.=) CURRENT_USER")
    return bool(cur.fetchone()[0])


def _drop_earlier_watch(cur: cursor) -> None:
    """Drop the event trigger function an earlier version left in ``ace_mtree``, and its
    event trigger.

    It read the catalogue and appended to the log a catalogue row named, both of
    which roles other than ACE's login may write (a tree builder's own "log" with
    her trigger on it), and, older still, ran as the superuser who made it. The
    watch now lives in ``ace_mtree_admin`` (:mod:`ace_shared.mtree.watch`).
    Dropping reads nothing in the schema.
    """
    cur.execute("DROP FUNCTION IF EXISTS ace_mtree.on_alter_table() CASCADE")


def _owners(cur: cursor) -> tuple[str | None, str | None]:
    """The owners of the schema ``ace_mtree`` and of its catalogue, if they exist."""
    cur.execute("SELECT (SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
                "WHERE nspname OPERATOR(pg_catalog.=) 'ace_mtree'), "
                "(SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class "
                "WHERE oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('ace_mtree.trees'))")
    schema, catalogue = cur.fetchone()
    return schema, catalogue


def _current_user(cur: cursor) -> str:
    cur.execute("SELECT CURRENT_USER")
    return str(cur.fetchone()[0])


def _refuse_foreign_schema(cur: cursor, node: str, cluster: str) -> None:
    """``init`` uses only an ``ace_mtree`` (and catalogue) that the login running it owns.

    A role with ``CREATE`` on the database could have made the schema first, with
    a view or triggers of her own for the catalogue, to have them run in the
    sessions of ACE's login, of callers and of the administrator.
    """
    me = _current_user(cur)
    schema, catalogue = _owners(cur)
    for what, owner in (("schema ace_mtree", schema), ("catalogue ace_mtree.trees", catalogue)):
        if owner is not None and owner != me:
            raise TableError(
                f"The {what} on node {node} belongs to {owner}, not to {me}, the login "
                f"running 'ace mtree init', so ACE will not use it (its owner could run code "
                f"in ACE's sessions); drop the schema (DROP SCHEMA ace_mtree CASCADE) and run "
                f"'ace mtree init {cluster}' again.")


def init(cur: cursor, node: str, cluster: str) -> bool:
    """Create ACE's schema and its catalogue of trees (idempotent; upgrades an older one).

    Run by a superuser (the admin cluster file), it installs the watch of ALTER
    TABLE in ``ace_mtree_admin`` instead (:mod:`ace_shared.mtree.watch`) and
    returns True; it then touches ``ace_mtree`` only if the schema is missing or
    its own (a deployment whose ACE login is a superuser), never one another
    role made. Run by ACE's login, the schema must be missing or its own.
    """
    if _is_superuser(cur):
        watch.install(cur, node)
        schema, _ = _owners(cur)
        if schema is not None and schema != _current_user(cur):
            # catalogue facts only: dropping the earlier watch's function reads nothing
            cur.execute("DROP FUNCTION IF EXISTS ace_mtree.on_alter_table()")
            return True
        _init_schema(cur, node, cluster)
        return True
    _init_schema(cur, node, cluster)
    return False


def _init_schema(cur: cursor, node: str, cluster: str) -> None:
    _refuse_foreign_schema(cur, node, cluster)
    cur.execute(INIT_SQL)
    if not _has_current_columns(cur):
        cur.execute(UPGRADE_SQL)
    cur.execute(DROP_DEFAULTS_SQL)
    _drop_earlier_watch(cur)
    cur.execute("SELECT pg_catalog.to_regrole(%s) IS NOT NULL", (WRITER_ROLE,))
    if cur.fetchone()[0]:  # what the earlier watch was granted here; the new one needs none
        cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {s} FROM {r}; REVOKE ALL ON {s}.trees FROM {r}"
                            ).format(s=sql.Identifier(SCHEMA), r=sql.Identifier(WRITER_ROLE)))


def _key_columns_ddl(shape: TableShape, prefix: str) -> sql.Composable:
    cols = []
    for i, c in enumerate(shape.key_columns):
        coll = (sql.SQL(" COLLATE {}").format(sql.SQL(c.collation_sql))
                if c.collation_sql else sql.SQL(""))
        cols.append(sql.SQL("{} {}{}").format(sql.Identifier(f"{prefix}{i}"),
                                              sql.SQL(c.type_sql), coll))
    return sql.SQL(", ").join(cols)


def _key_names(shape: TableShape, prefix: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(f"{prefix}{i}") for i in range(len(shape.key)))


BLOCKS_FILL = 50  # percent of a leaf page filled by inserts: the rest for updated versions


def create_storage(cur: cursor, shape: TableShape, key: str) -> None:
    """(Re)create the tree's leaf, inner and log tables, empty.

    ``shape`` is the table's :func:`~ace_shared.mtree.keytypes.cast_shape`: its key
    columns have their built-in base types, and so have the bounds and logged keys.
    """
    for kind in KINDS:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(obj(kind, key)))
    lows = _key_columns_ddl(shape, "l")
    # agreed: the nodes the leaf last agreed on, one digest each, sorted; none yet: {} (kept.py)
    # Half of every page free: a fold rewrites the count and hash of every leaf it touches
    # (every leaf, under changes scattered over the table), and with room on its page a
    # leaf's new version is a heap-only update, no entry in its three indexes (a fifth of
    # the fold's time, and the indexes' growth between vacuums, when pages were full).
    cur.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {} (block_no integer PRIMARY KEY, {}, "
        "row_count bigint NOT NULL, hash bigint NOT NULL, agreed bigint[] NOT NULL) "
        "WITH (fillfactor = {})").format(obj("blocks", key), lows, sql.Literal(BLOCKS_FILL)))
    cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(obj("blocks", key),
                                                          _key_names(shape, "l")))
    cur.execute(sql.SQL("CREATE INDEX ON {} (agreed)").format(obj("blocks", key)))
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({}, PRIMARY KEY ({}))").format(
        obj("keys", key), _key_columns_ddl(shape, "k"), _key_names(shape, "k")))
    cur.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {} (level smallint, idx integer, row_count bigint NOT NULL, "
        "hash text NOT NULL, PRIMARY KEY (level, idx))").format(obj("inner", key)))
    # The log only grows between folds, so autovacuum would otherwise visit it again and again
    # for its inserts (and analyze it), on the writers' CPUs: a quarter of tracking's cost under
    # pgbench. Its dead rows, left by each fold, are still vacuumed as usual.
    quiet = (sql.SQL(" WITH (autovacuum_vacuum_insert_threshold = -1, "
                     "autovacuum_analyze_threshold = 2147483647)")
             if shape.server_version_num >= 130000 else sql.SQL(""))
    cur.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {} ({}, sign smallint NOT NULL, h bigint){}").format(
        obj("log", key), _key_columns_ddl(shape, "k"), quiet))
    for kind in KINDS:
        cur.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(obj(kind, key)))


def _log_values(shape: TableShape, record: str, sign: int) -> sql.Composable:
    """``(<key columns>, sign, <row hash>)`` of the trigger's ``OLD`` or ``NEW`` row."""
    keys = sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.SQL(record), sql.Identifier(c.name))
                              for c in shape.key_columns)
    return sql.SQL("({}, {}, {})").format(keys, sql.Literal(sign),
                                         queries.row_hash(shape, record))


def _function_body(shape: TableShape, key: str, event: str) -> sql.Composable:
    """The body of the trigger function of one event: a single statement.

    A VALUES row of the record's own fields: no query of a subselect per row written.
    """
    log = obj("log", key)
    rows = {
        "ins": sql.SQL("{}").format(_log_values(shape, "NEW", 1)),
        "upd": sql.SQL("{}, {}").format(_log_values(shape, "OLD", -1),
                                        _log_values(shape, "NEW", 1)),
        "del": sql.SQL("{}").format(_log_values(shape, "OLD", -1)),
    }.get(event)
    insert = (sql.SQL("INSERT INTO {} (sign) VALUES ({})").format(log, sql.Literal(TRUNCATED))
              if rows is None else sql.SQL("INSERT INTO {} VALUES {}").format(log, rows))
    return sql.SQL("BEGIN\n  {};\n  RETURN NULL;\nEND").format(insert)


# Which pinned settings change the text of a type that is hashed through its text. A
# type not named here (arrays, ranges, composites, enums, domains, ...) gets them all.
_SETTINGS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "float4": ("extra_float_digits",), "float8": ("extra_float_digits",),
    "interval": ("IntervalStyle",), "money": ("lc_monetary",),
    "numeric": (), "json": (), "jsonb": (), "xml": (), "inet": (), "cidr": (), "citext": (),
    **{name: () for name in ("text", "varchar", "bpchar", "name")},  # non-deterministic collations
}


def needed_settings(shape: TableShape) -> list[str]:
    """The pinned settings the row hash of this table depends on.

    Setting a parameter on every call of a trigger function costs time on every
    row written (``TimeZone`` most), so only those that can change a hashed
    value's text are pinned.
    """
    wanted: set[str] = set()
    for c in shape.columns:
        if c.binary_hash_exact:
            continue
        wanted.update(_SETTINGS_BY_TYPE.get(c.base_type, _FUNCTION_SETTINGS))
    return [name for name in _FUNCTION_SETTINGS if name in wanted]


def _function_settings(shape: TableShape) -> sql.Composable:
    # No SET search_path: changing it on every call cost a third of a small transaction's
    # throughput. Every name in the body is qualified instead (pg_catalog's function, type
    # and operators, ACE's table), so a writer's search path cannot redirect any of them.
    parts: list[sql.Composable] = []
    for name in needed_settings(shape):
        parts.append(sql.SQL("SET {} = {}").format(sql.Identifier(name),
                                                   sql.Literal(PINNED_SETTINGS[name])))
    return sql.SQL(" ").join(parts)


# One trigger per event, each calling a function of one statement. One function for
# all events, choosing by TG_OP, spent about as long choosing as logging.
_EVENTS = {  # trigger suffix -> when it fires, and for what
    "ins": ("AFTER INSERT", "FOR EACH ROW"),
    "upd": ("AFTER UPDATE", "FOR EACH ROW"),
    "del": ("AFTER DELETE", "FOR EACH ROW"),
    "trunc": ("AFTER TRUNCATE", "FOR EACH STATEMENT"),
}
EXPECTED_TRIGGERS = {suffix: "A" for suffix in _EVENTS}
# what earlier versions created (one trigger and function for all row events): still
# dropped, so a build or teardown leaves no second logger behind
_EARLIER_TRIGGERS = ("row",)
_EARLIER_FUNCTIONS = ("track",)


def _function(key: str, event: str) -> sql.Composable:
    return obj(f"track_{event}", key)


def create_tracking(cur: cursor, shape: TableShape, key: str, table_owner: str) -> None:
    """Create the trigger functions and the triggers that fill the log."""
    owner = sql.Identifier(table_owner)
    # granted once per owner: every GRANT rewrites the schema's catalogue row, and two builds
    # at once (of different tables) failed on it with "tuple concurrently updated"
    cur.execute("SELECT pg_catalog.has_schema_privilege(%s, %s, 'USAGE')", (table_owner, SCHEMA))
    if not cur.fetchone()[0]:
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA),
                                                                     owner))
    cur.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(obj("log", key), owner))
    table = queries.table_ref(shape)
    # the functions are made afresh, never replaced: a function of that name someone else
    # made (and owns, with her grants) is dropped, not reused (one transaction: no gap)
    drop_tracking(cur, shape.table, key)
    _drop_functions(cur, key)
    for event in _EVENTS:
        fn = _function(key, event)
        body = _function_body(shape, key, event).as_string(cur)
        tag = f"$ace_{secrets.token_hex(6)}$"
        while tag in body:
            tag = f"$ace_{secrets.token_hex(6)}$"
        cur.execute(sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER {} "
            "AS {}").format(fn, _function_settings(shape), sql.SQL(tag + body + tag)), ())
        cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(fn))
        cur.execute(sql.SQL("ALTER FUNCTION {}() OWNER TO {}").format(fn, owner))
    for event, (when, how) in _EVENTS.items():
        trigger = sql.Identifier(TRIGGER_PREFIX + event)
        cur.execute(sql.SQL("CREATE TRIGGER {} {} ON {} {} EXECUTE FUNCTION {}()").format(
            trigger, sql.SQL(when), table, sql.SQL(how), _function(key, event)), ())
        # ALWAYS: replication apply workers and ACE's own repairs write with
        # session_replication_role = replica, where ordinary triggers stay silent
        cur.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(table, trigger))


def tracking_state(cur: cursor, table_oid: int) -> dict[str, str]:
    """Suffix -> ``tgenabled`` of ACE's triggers on the table."""
    cur.execute("SELECT tgname, tgenabled FROM pg_catalog.pg_trigger WHERE tgrelid "
                "OPERATOR(pg_catalog.=) %s AND tgname OPERATOR(pg_catalog.~~) %s",
                (table_oid, TRIGGER_PREFIX.replace("_", r"\_") + "%"))
    return {name[len(TRIGGER_PREFIX):]: str(state) for name, state in cur.fetchall()}


def drop_tracking(cur: cursor, table: TableName, key: str) -> None:
    """Drop the triggers, if the table still exists (the functions go with the tree)."""
    cur.execute("SELECT pg_catalog.to_regclass(%s)", (f"{_q(table.schema)}.{_q(table.table)}",))
    if cur.fetchone()[0] is not None:
        ref = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.table))
        for suffix in (*EXPECTED_TRIGGERS, *_EARLIER_TRIGGERS):
            cur.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(TRIGGER_PREFIX + suffix), ref))


def _drop_functions(cur: cursor, key: str) -> None:
    functions = [_function(key, e) for e in _EVENTS] + [obj(k, key) for k in _EARLIER_FUNCTIONS]
    for fn in functions:
        cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(fn))


def drop_tree(cur: cursor, table: TableName, key: str) -> None:
    """Remove every object of one tree: triggers, functions, tables, catalogue row."""
    drop_tracking(cur, table, key)
    _drop_functions(cur, key)
    for kind in KINDS:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(obj(kind, key)))
    if schema_exists(cur):
        cur.execute("DELETE FROM ace_mtree.trees WHERE tree_key OPERATOR(pg_catalog.=) %s",
                    (key,))


def schema_exists(cur: cursor) -> bool:
    cur.execute("SELECT pg_catalog.to_regclass('ace_mtree.trees') IS NOT NULL")
    return bool(cur.fetchone()[0])


def schema_state(cur: cursor) -> str:
    """``missing``, ``older`` (a catalogue without today's columns) or ``current``: one
    query, every command asks it first."""
    cur.execute("SELECT c.oid IS NOT NULL, (SELECT pg_catalog.count(*) FROM "
                "pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND "
                "a.attname OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.name[]) AND NOT "
                "a.attisdropped) FROM (SELECT pg_catalog.to_regclass('ace_mtree.trees') AS oid) c",
                (list(_CURRENT_COLUMNS),))
    exists, current = cur.fetchone()
    if not exists:
        return "missing"
    return "current" if int(current) == len(_CURRENT_COLUMNS) else "older"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
