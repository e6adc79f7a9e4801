"""SQL text for hashing, narrowing and fetching rows, built from a :class:`TableShape`.

Every identifier goes through ``sql.Identifier``; every key value is a bound
parameter cast to its column's *base* type (past every domain, so no domain
CHECK runs); the only raw text is the catalog's own type names and the user's
checked table filter. Every function and operator is named in ``pg_catalog``
(the search path is pinned to ``pg_catalog, pg_temp`` too): these queries run in
sessions with more rights than the table's owner, who may create look-alikes
(docs/security.md, "Code a table owner controls"). Every query here is run
with bound parameters (a ``COPY`` has them merged in by psycopg2's own quoting),
so a ``%`` in any name or type is doubled. Parameters are named (:func:`param`):
each is placed where its value is used, whatever order the parts of a query are
built in. Key values
travel as the text PostgreSQL prints for them and are cast back on the server,
so a key round-trips exactly whatever its type.
"""

from __future__ import annotations

import json

from psycopg2 import sql

from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.nodes.filter import FILTER_MARK
from ace_shared.nodes.shape import Column, TableShape

Params = dict[str, object]
Query = tuple[sql.Composable, Params]


def param(params: Params, value: object) -> sql.Composable:
    """A named placeholder for ``value``, which is added to ``params`` under a new name."""
    name = f"p{len(params)}"
    params[name] = value
    return sql.Placeholder(name)

PINNED_PLAN = ("SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
               "SET LOCAL enable_mergejoin = off; SET LOCAL jit = off")
"""Run (in the same transaction) before every query that reads ranges or keys of a table.

Each such query must read only the rows of its ranges or keys: one index range
scan per range, one index probe per key. Which plan the planner picks otherwise
depends on its estimates (a row comparison on a composite key, a join against
a list of bounds or keys, a wide table's statistics), and one wrong estimate
turns every range into a scan of the whole table. With sequential scans, hash
and merge joins priced out, the only plans left are the index's; JIT is off
because the price of a path that had no alternative would also switch JIT on.
"""


class Name(sql.Identifier):  # type: ignore[misc]  # psycopg2 ships no types
    """``sql.Identifier`` with ``%`` doubled: a name such as ``"100%"`` next to bound parameters."""

    def as_string(self, context: object) -> str:
        return str(super().as_string(context)).replace("%", "%%")


def catalog_text(text: str) -> sql.Composable:
    """A type or collation name as the catalog printed it, ``%`` doubled."""
    return sql.SQL(text.replace("%", "%%"))


def filter_sql(table_filter: str) -> sql.Composable:
    """The user's checked filter, parenthesised, with ``%`` escaped for bound parameters,
    marked (:data:`FILTER_MARK`) so an error of its statement can point to it."""
    return sql.SQL("(" + FILTER_MARK + " {})").format(sql.SQL(table_filter.replace("%", "%%")))


def table_ref(shape: TableShape) -> sql.Composable:
    return sql.SQL("{}.{}").format(Name(shape.table.schema), Name(shape.table.table))


def _col(c: Column) -> sql.Composable:
    return Name(c.name)


def op(symbol: str) -> sql.Composable:
    """A built-in operator, named in ``pg_catalog`` (``%`` doubled for bound parameters)."""
    return sql.SQL("OPERATOR(pg_catalog.{})").format(sql.SQL(symbol.replace("%", "%%")))


def as_text(c: Column, expr: sql.Composable) -> sql.Composable:
    """``expr`` (a value of column ``c``) printed as text, through no cast its type's owner
    could have created."""
    return sql.SQL(c.text_sql("{}")).format(expr)


def base_type(c: Column) -> sql.Composable:
    """The type key values of ``c`` are cast to: its base type, never a domain."""
    return catalog_text(c.cast_sql)


def _is_array(c: Column) -> bool:
    return c.cast_sql.endswith("[]") or c.cast_sql.startswith('pg_catalog."_')


def array_literal(values: list[str]) -> str:
    """``values`` as one array literal (``{"a","b"}``), read by the element type's own
    input function when cast with ``::type[]``."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def key_order(shape: TableShape) -> sql.Composable:
    return sql.SQL(", ").join(_col(c) for c in shape.key_columns)


def key_as_text(shape: TableShape) -> sql.Composable:
    """Key columns as text, aliased so that ``ORDER BY`` still means the typed columns."""
    return sql.SQL(", ").join(sql.SQL("{} AS {}").format(as_text(c, _col(c)),
                                                         sql.Identifier(f"ace_k{i}"))
                              for i, c in enumerate(shape.key_columns))


def columns_as_text(shape: TableShape) -> sql.Composable:
    """All columns as text, aliased so that ``ORDER BY`` still means the typed columns."""
    return sql.SQL(", ").join(sql.SQL("{} AS {}").format(as_text(c, _col(c)),
                                                         sql.Identifier(f"ace_c{i}"))
                              for i, c in enumerate(shape.columns))


class Text(sql.Literal):  # type: ignore[misc]  # psycopg2 ships no types
    """A string literal with ``%`` doubled, for queries run with bound parameters."""

    def as_string(self, context: object) -> str:
        return str(super().as_string(context)).replace("%", "%%")


def row_json_text(shape: TableShape, alias: str) -> sql.Composable:
    """The row as the JSON text the diff file writes for it, built on the node.

    ``json.dumps({column: value as text or None, ...}, ensure_ascii=False)`` and
    ``to_json(text)`` escape a string the same way (``"``, ``\\`` and the
    control characters, ``\\b \\f \\n \\r \\t`` by name and the others as
    ``\\u00xx``; nothing else), so the text is the very text Python would
    write, and the client only copies it. The column names are encoded here, by
    Python. ``alias.ace_c<i>`` are the columns of :func:`columns_as_text`.
    """
    parts: list[sql.Composable] = []
    for i, c in enumerate(shape.columns):
        name = json.dumps(c.name, ensure_ascii=False)
        parts.append(Text(("{" if i == 0 else ", ") + name + ": "))
        parts.append(sql.SQL("COALESCE(pg_catalog.to_json({}.{})::pg_catalog.text, 'null')").format(
            sql.Identifier(alias), sql.Identifier(f"ace_c{i}")))
    parts.append(Text("}"))
    return sql.SQL("({})").format(sql.SQL(" OPERATOR(pg_catalog.||) ").join(parts))


def row_hash(shape: TableShape, record: str | None = None) -> sql.Composable:
    """A 64-bit hash of a row that is equal on two nodes exactly when the row's text is.

    Columns whose binary hash is exact are hashed as they are (no text round
    trip, about twice as fast); the others are hashed through their pinned text.
    ``record`` qualifies the columns (``NEW`` in a trigger function, which runs
    under the search path of whoever writes). The function and types are always
    named in ``pg_catalog``.
    """
    def col(c: Column) -> sql.Composable:
        return _col(c) if record is None else sql.SQL("{}.{}").format(sql.SQL(record), _col(c))
    if shape.server_version_num >= 140000:
        parts = [col(c) if c.binary_hash_exact else as_text(c, col(c)) for c in shape.columns]
        return sql.SQL("pg_catalog.hash_record_extended(ROW({}), 0::pg_catalog.int8)").format(
            sql.SQL(", ").join(parts))
    parts = [as_text(c, col(c)) for c in shape.columns]
    return sql.SQL("pg_catalog.hashtextextended(ROW({})::pg_catalog.text, 0::pg_catalog.int8)"
                   ).format(sql.SQL(", ").join(parts))


def _aggregate(shape: TableShape) -> sql.Composable:
    if shape.server_version_num >= 140000:
        return sql.SQL("COALESCE(pg_catalog.bit_xor({}), 0)").format(row_hash(shape))
    return sql.SQL("COALESCE(pg_catalog.sum({}), 0)::pg_catalog.text").format(row_hash(shape))


def key_tuple(shape: TableShape) -> sql.Composable:
    """The key's columns, as a row value when there are several (to compare with a bound)."""
    cols = sql.SQL(", ").join(_col(c) for c in shape.key_columns)
    return sql.SQL("({})").format(cols) if len(shape.key) > 1 else cols


def bound(shape: TableShape, key: Key, params: Params) -> sql.Composable:
    """``key`` as parameters cast to the key columns' base types, a row value when several."""
    casts = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(param(params, value), base_type(c))
        for value, c in zip(key, shape.key_columns, strict=True)
    )
    return sql.SQL("({})").format(casts) if len(shape.key) > 1 else casts


def range_where(shape: TableShape, rng: KeyRange, table_filter: str | None,
                params: Params) -> sql.Composable:
    """``WHERE`` conditions selecting the rows of ``rng`` that pass the filter."""
    conds: list[sql.Composable] = []
    if rng.lower is not None:
        conds.append(sql.SQL("{} {} {}").format(key_tuple(shape), op(">="),
                                                bound(shape, rng.lower, params)))
    if rng.upper is not None:
        conds.append(sql.SQL("{} {} {}").format(key_tuple(shape), op("<"),
                                                bound(shape, rng.upper, params)))
    if table_filter:
        conds.append(filter_sql(table_filter))
    if not conds:
        return sql.SQL("true")
    return sql.SQL(" AND ").join(conds)


def hash_range(shape: TableShape, rng: KeyRange, table_filter: str | None) -> Query:
    """Row count and combined hash of one range (per sub-range when it has inner cuts)."""
    if rng.inner:
        return hash_buckets(shape, rng, list(rng.inner), table_filter)
    params: Params = {}
    where = range_where(shape, rng, table_filter, params)
    q = sql.SQL("SELECT pg_catalog.count(*), {} FROM {} WHERE {}").format(
        _aggregate(shape), table_ref(shape), where)
    return q, params


def hash_buckets(shape: TableShape, rng: KeyRange, inner: list[Key],
                 table_filter: str | None) -> Query:
    """Per-sub-range count and hash, in one scan of ``rng``, cut at ``inner``.

    Sub-range ``i`` holds the keys with ``inner[i-1] <= key < inner[i]``. A
    single-column key is placed by ``width_bucket`` (a binary search over the
    cuts, in the column's own collation); a composite key by comparing row values.
    """
    params: Params = {}
    # width_bucket takes an element and an array of them: not for a key that is itself an array
    if len(shape.key) == 1 and not _is_array(shape.key_columns[0]):
        col = shape.key_columns[0]
        operand = _col(col)
        if col.collation_sql:
            operand = sql.SQL("{} COLLATE {}").format(operand, catalog_text(col.collation_sql))
        # one array literal, read by the element type's input function (no text cast)
        cuts = param(params, array_literal([k[0] for k in inner]))
        bucket = sql.SQL("pg_catalog.width_bucket({}, {}::{}[])").format(operand, cuts,
                                                                          base_type(col))
    else:
        whens = []
        for i, cut in enumerate(inner):
            whens.append(sql.SQL("WHEN {} {} {} THEN {}").format(
                key_tuple(shape), op("<"), bound(shape, cut, params), sql.Literal(i)))
        bucket = sql.SQL("CASE {} ELSE {} END").format(sql.SQL(" ").join(whens),
                                                       sql.Literal(len(inner)))
    where = range_where(shape, rng, table_filter, params)
    q = sql.SQL("SELECT {} AS b, pg_catalog.count(*), {} FROM {} WHERE {} GROUP BY 1").format(
        bucket, _aggregate(shape), table_ref(shape), where)
    return q, params


def inner_boundaries(shape: TableShape, rng: KeyRange, step: int,
                     table_filter: str | None) -> Query:
    """Every ``step``-th key inside ``rng``, to cut it into sub-ranges."""
    params: Params = {}
    q = sql.SQL(
        "SELECT {kt} FROM (SELECT {kc}, pg_catalog.row_number() OVER (ORDER BY {ko}) AS ace_rn "
        "FROM {t} WHERE {w}) s WHERE ace_rn {mod} {step}::pg_catalog.int8 {eq} 0 ORDER BY {ko}"
    ).format(kt=key_as_text(shape), kc=key_order(shape), ko=key_order(shape),
             t=table_ref(shape), w=range_where(shape, rng, table_filter, params), mod=op("%"),
             step=param(params, step), eq=op("="))
    return q, params


def leaf_hashes(shape: TableShape, rng: KeyRange, table_filter: str | None) -> Query:
    """Each row's key and hash in ``rng``, in key order."""
    params: Params = {}
    where = range_where(shape, rng, table_filter, params)
    q = sql.SQL("SELECT {}, {} FROM {} WHERE {} ORDER BY {}").format(
        key_as_text(shape), row_hash(shape), table_ref(shape), where, key_order(shape))
    return q, params


def stream_hashes(shape: TableShape, rng: KeyRange, table_filter: str | None) -> Query:
    """``COPY`` of each row's key (as text) and hash in ``rng``, in no particular order.

    The rows are compared as sets of lines, so no node sorts them, and ``COPY``
    hands each line over as it is, without building a Python row.
    """
    params: Params = {}
    where = range_where(shape, rng, table_filter, params)
    q = sql.SQL("COPY (SELECT {}, {} FROM {} WHERE {}) TO STDOUT").format(
        key_as_text(shape), row_hash(shape), table_ref(shape), where)
    return q, params


def _keys_relation(shape: TableShape, keys: list[Key], params: Params) -> sql.Composable:
    """The keys, one row per key (``u.k0, u.k1, ..., u.ord``), to be read as their
    columns' base types (:func:`_typed_key`).

    Each key column travels as one parameter, for the driver to quote once (a
    list of a thousand texts was most of the client's work per fetch). A key of
    a built-in type travels as a JSON array of texts (JSON strings hold any text
    PostgreSQL does), cast to its base type where used; an enum key as one
    array literal, read by the enum's own input function: a cast from text to
    the enum could be one its owner created.
    """
    cols = shape.key_columns
    arrays = []
    for i, c in enumerate(cols):
        values = [k[i] for k in keys]
        if c.builtin_cast:
            texts = param(params, json.dumps(values, ensure_ascii=False))
            arrays.append(sql.SQL("pg_catalog.json_array_elements_text({}::pg_catalog.json)")
                          .format(texts))
        else:
            literal = param(params, array_literal(values))
            arrays.append(sql.SQL("pg_catalog.unnest({}::{}[])").format(literal, base_type(c)))
    names = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(cols)))
    return sql.SQL("ROWS FROM ({}) WITH ORDINALITY AS u({}, ord)").format(
        sql.SQL(", ").join(arrays), names)


def _typed_key(c: Column, i: int) -> sql.Composable:
    """Key column ``i`` of :func:`_keys_relation` as a value of its base type."""
    name = sql.SQL("u.{}").format(sql.Identifier(f"k{i}"))
    return sql.SQL("{}::{}").format(name, base_type(c)) if c.builtin_cast else name


def _typed_keys(shape: TableShape) -> list[sql.Composable]:
    """The keys of :func:`_keys_relation` as their base types, in their collations."""
    out = []
    for i, c in enumerate(shape.key_columns):
        expr = _typed_key(c, i)
        if c.collation_sql:
            expr = sql.SQL("{} COLLATE {}").format(expr, catalog_text(c.collation_sql))
        out.append(expr)
    return out


def _typed_order(shape: TableShape) -> sql.Composable:
    """The keys of :func:`_keys_relation` in the table's key order, ties by position."""
    return sql.SQL(", ").join([*_typed_keys(shape), sql.SQL("u.ord")])


# Each fetched row's commit time (as UTC text) and origin (its id, and its name where it
# has one), from the row's xmin. Read only where the node tracks commit timestamps: the
# function raises otherwise, and is strict, so a NULL xmin asks nothing. Whether it does
# is asked once per statement (an uncorrelated subquery, run once as an InitPlan), not
# once per row.
COMMIT_META = sql.SQL(
    "pg_catalog.to_char(pg_catalog.timezone('UTC', ace_cts.\"timestamp\"), "
    "'YYYY-MM-DD HH24:MI:SS.US') OPERATOR(pg_catalog.||) '+00', ace_cts.roident, "
    "ace_ro.roname::pg_catalog.text")


def commit_meta_join(xmin: sql.Composable) -> sql.Composable:
    """The joins :data:`COMMIT_META` reads, for the row whose xmin is ``xmin``."""
    return sql.SQL(
        "LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(CASE WHEN (SELECT "
        "pg_catalog.current_setting('track_commit_timestamp')::pg_catalog.bool) THEN {} "
        "END) ace_cts ON true LEFT JOIN pg_catalog.pg_replication_origin ace_ro "
        "ON ace_ro.roident OPERATOR(pg_catalog.=) ace_cts.roident").format(xmin)


# a fetched row's, unless the row before it has the same xmin (see fetch_rows_in_order)
FETCHED_META_JOIN = commit_meta_join(sql.SQL("CASE WHEN NOT f.ace_same THEN f.ace_xmin END"))


def fetch_rows_in_order(shape: TableShape, keys: list[Key], table_filter: str | None) -> Query:
    """Every one of ``keys`` in the table's key order: its position in ``keys``, the
    row it names as the diff file's JSON text (:func:`row_json_text`), NULL where
    this node holds none, then the row's commit time, origin id and origin name
    (:data:`COMMIT_META`; NULL where unknown), read with the row in the same query,
    and last whether the row was written by the same transaction as the row before
    it in this order (its xmin is the same), whose commit time and origin it then
    shares: those three are read only for a row that is not (they are NULL for one
    that is), so rows a transaction wrote side by side cost one look-up, not one each.

    Two nodes can hold one key spelt two ways (numeric ``1.0`` and ``1.00``, an
    interval ``1 day`` and ``24:00:00``, float ``-0`` and ``0``): PostgreSQL's
    equality says which rows belong together, not the text, so a row is reported
    at the first position of the keys equal to its key, the others get NULL.

    Each key is one index probe (a lateral join, in the pinned plan's nested
    loop), and the first position of equal keys comes from a window over the keys
    alone: nothing matches keys against rows already fetched, which under the
    pinned plan (no hash or merge join) compared every key with every row, two
    thousand by two thousand per batch. The table and the filter are read in a
    subquery of their own, so the filter sees only the table's columns. The
    rows come out of the window that compares each xmin with the one before already
    in the answer's order. One round trip both fetches and orders a batch of
    differing keys.
    """
    params: Params = {}
    rel = _keys_relation(shape, keys, params)
    typed = [sql.Identifier(f"ace_t{i}") for i in range(len(shape.key))]
    inner_keys = sql.SQL(", ").join(sql.SQL("{} AS {}").format(_col(c), t)
                                    for c, t in zip(shape.key_columns, typed, strict=True))
    where = sql.SQL(" WHERE {}").format(filter_sql(table_filter)) if table_filter else sql.SQL("")
    r_keys = sql.SQL(", ").join(sql.SQL("r.{}").format(t) for t in typed)
    u_keys = sql.SQL(", ").join(_typed_key(c, i) for i, c in enumerate(shape.key_columns))
    u_cols = sql.SQL(", ").join(sql.SQL("u.{}").format(sql.Identifier(f"k{i}"))
                                for i in range(len(shape.key_columns)))
    r_cols = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(f"ace_c{i}"))
                                for i in range(len(shape.columns)))
    m_cols = sql.SQL(", ").join(sql.SQL("m.{}").format(sql.Identifier(f"ace_c{i}"))
                                for i in range(len(shape.columns)))
    # the keys as their base types (in their collations), to order the answer by
    sorts = [sql.Identifier(f"ace_s{i}") for i in range(len(shape.key))]
    sort_cols = sql.SQL(", ").join(sql.SQL("{} AS {}").format(e, s)
                                   for e, s in zip(_typed_keys(shape), sorts, strict=True))
    f_order = sql.SQL(", ").join([*(sql.SQL("f.{}").format(s) for s in sorts), sql.SQL("f.ord")])
    q = sql.SQL(
        "SELECT f.ord, CASE WHEN f.ace_hit THEN {js} END, {meta}, f.ace_same "
        "FROM (SELECT u.ord, {sc}, m.ace_hit, {mc}, m.ace_xmin, "
        "COALESCE(pg_catalog.lag(m.ace_xmin) OVER (ORDER BY {order}) {eq} m.ace_xmin, false) "
        "AS ace_same "
        "FROM (SELECT {uc}, u.ord, pg_catalog.min(u.ord) OVER (PARTITION BY {tk}) AS ace_first "
        "FROM {rel}) u "
        "LEFT JOIN LATERAL (SELECT true AS ace_hit, {rc}, r.ace_xmin "
        "FROM (SELECT {ik}, {ct}, xmin AS ace_xmin FROM {t}{w}) r "
        "WHERE ({rk}) {eq} ({uk})) m ON u.ord {eq} u.ace_first) f {mj} "
        "ORDER BY {forder}"
    ).format(js=row_json_text(shape, "f"), meta=COMMIT_META, sc=sort_cols, mc=m_cols,
             order=_typed_order(shape), uc=u_cols, tk=sql.SQL(", ").join(_typed_keys(shape)),
             rel=rel, rc=r_cols, ik=inner_keys, ct=columns_as_text(shape), t=table_ref(shape),
             w=where, rk=r_keys, eq=op("="), uk=u_keys, mj=FETCHED_META_JOIN, forder=f_order)
    return q, params


def sort_keys(shape: TableShape, keys: list[Key]) -> Query:
    """Positions of ``keys`` in the table's own key order (for merging nodes' keys)."""
    params: Params = {}
    rel = _keys_relation(shape, keys, params)
    q = sql.SQL("SELECT ord FROM {} ORDER BY {}").format(
        rel, sql.SQL(", ").join(_typed_keys(shape)))
    return q, params


def sort_key_runs(shape: TableShape, keys: list[Key]) -> Query:
    """Positions of ``keys`` in the table's key order, each with whether the key before
    it is equal to it (the same key spelt two ways), so batches can keep them together.

    Ties are broken by position, so the window and the result agree on the order.
    """
    params: Params = {}
    rel = _keys_relation(shape, keys, params)
    typed = [sql.SQL("{} AS {}").format(expr, sql.Identifier(f"s{i}"))
             for i, expr in enumerate(_typed_keys(shape))]
    names = [sql.Identifier(f"s{i}") for i in range(len(shape.key_columns))]
    order = sql.SQL(", ").join([*names, sql.SQL("ord")])
    # keys are never NULL; lag() is NULL only before the first
    same = sql.SQL(" AND ").join(
        sql.SQL("COALESCE(pg_catalog.lag({}) OVER w {} {}, false)").format(n, op("="), n)
        for n in names)
    q = sql.SQL(
        "SELECT ord, {same} "
        "FROM (SELECT u.ord, {typed} FROM {rel}) s WINDOW w AS (ORDER BY {order}) "
        "ORDER BY {order}"
    ).format(same=same, typed=sql.SQL(", ").join(typed), rel=rel, order=order)
    return q, params


def sample_keys(shape: TableShape, percent: float | None, table_filter: str | None) -> Query:
    """Keys of a row sample (or of every row when ``percent`` is None), in key order.

    BERNOULLI picks rows, not pages: a page sample of a table loaded in key order
    returns runs of neighbouring keys and makes very uneven ranges.
    """
    params: Params = {}
    sample = sql.SQL("")
    if percent is not None:
        sample = sql.SQL(" TABLESAMPLE BERNOULLI ({})").format(param(params, percent))
    where = sql.SQL(" WHERE {}").format(filter_sql(table_filter)) if table_filter else sql.SQL("")
    q = sql.SQL("SELECT {} FROM {}{}{} ORDER BY {}").format(
        key_as_text(shape), table_ref(shape), sample, where, key_order(shape))
    return q, params


def every_nth_key(shape: TableShape, step: int, table_filter: str | None) -> Query:
    """Every ``step``-th key of the whole (filtered) table: exact boundaries for small tables."""
    return inner_boundaries(shape, KeyRange(0, None, None), step, table_filter)
