"""SQL for set-based repairs: stage rows in a temp table, then change the table in bulk.

A node's rows to change are COPYed (text format) into a temporary table whose
columns are all text, then applied with one statement per kind of change:
one ``DELETE ... USING``, one ``INSERT ... SELECT ... ON CONFLICT``, one
``UPDATE ... FROM``. Values travel as the text PostgreSQL printed for them and
are cast back with ``::<catalog type>`` on the server, so every type round-trips
exactly. Identifiers go through ``sql.Identifier``; the only raw text is the
catalog's own type names.

Values written are cast to the column's own type, so a domain's CHECK runs as
it would for any write by the repairing role. Everything that only reads (the
key match, the comparison of staged and live rows) casts to the base type, and
names pg_catalog's functions and operators (docs/security.md, "Code a table
owner controls").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from psycopg2 import sql

from ace_shared.difffile.format import Row
from ace_shared.nodes.shape import Column, TableShape

STAGE = "ace_repair_stage"

# What the classification query says about each staged row.
STATE_ABSENT = 0  # the node has no row with this key
STATE_SAME = 1  # the node's row already holds these values (or has nothing to fill)
STATE_DIFFERS = 2  # the node's row differs (upsert), exists (delete), or has NULLs to fill
COPY_CHUNK = 1 << 16

def copy_field(value: str | None) -> str:
    """One field of COPY's text format: ``\\N`` is NULL, so an empty string stays empty."""
    if value is None:
        return "\\N"
    if "\\" in value or "\n" in value or "\r" in value or "\t" in value:
        # (str.translate would do this in one call, but ten times slower)
        return (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
                .replace("\t", "\\t"))
    return value


class LineStream:
    """A read-only file over an iterator of lines, so COPY never needs the whole text."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines: Iterator[str] = iter(lines)
        self._buf = ""

    def read(self, size: int = -1) -> str:
        parts = [self._buf]
        have = len(self._buf)
        while size < 0 or have < size:
            line = next(self._lines, None)
            if line is None:
                break
            parts.append(line)
            have += len(line)
        data = "".join(parts)
        if size < 0 or len(data) <= size:
            self._buf = ""
            return data
        self._buf = data[size:]
        return data[:size]

    def readline(self, size: int = -1) -> str:
        return self.read(size)


def stage_lines(staged: Iterable[tuple[str, str]], columns: list[str]) -> Iterator[str]:
    """COPY lines from ``(op, row as JSON text)`` pairs; a line's position is its ``ord``."""
    for ord_, (op, text) in enumerate(staged):
        row: Row = json.loads(text)
        fields = [str(ord_), op] + [copy_field(row.get(c)) for c in columns]
        yield "\t".join(fields) + "\n"


def _c(i: int) -> sql.Identifier:
    return sql.Identifier(f"c{i}")


def create_stage(n_columns: int) -> sql.Composable:
    cols = sql.SQL("").join(sql.SQL(", {} pg_catalog.text").format(_c(i))
                            for i in range(n_columns))
    return sql.SQL("CREATE TEMP TABLE {} (ord pg_catalog.int4, op pg_catalog.text{}) "
                   "ON COMMIT DROP").format(sql.Identifier(STAGE), cols)


def copy_stage(n_columns: int) -> sql.Composable:
    cols = sql.SQL("").join(sql.SQL(", {}").format(_c(i)) for i in range(n_columns))
    return sql.SQL("COPY {} (ord, op{}) FROM STDIN").format(sql.Identifier(STAGE), cols)


class RepairSql:
    """Statements for one table, with its writable columns staged as ``c0, c1, ...``."""

    def __init__(self, shape: TableShape, columns: list[Column]) -> None:
        self.shape = shape
        self.columns = columns
        self.index = {c.name: i for i, c in enumerate(columns)}
        self.table = sql.SQL("{}.{}").format(sql.Identifier(shape.table.schema),
                                             sql.Identifier(shape.table.table))
        self.key_cols = [c for c in columns if c.name in shape.key]
        self.value_cols = [c for c in columns if c.name not in shape.key]

    def _cast(self, c: Column) -> sql.Composable:
        """A staged value as written: cast to the column's own type."""
        return sql.SQL("s.{}::{}").format(_c(self.index[c.name]), sql.SQL(c.type_sql))

    def _read(self, c: Column) -> sql.Composable:
        """A staged value as compared: cast to the column's base type (no domain CHECK)."""
        return sql.SQL("s.{}::{}").format(_c(self.index[c.name]), sql.SQL(c.cast_sql))

    def _key_match(self) -> sql.Composable:
        live = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k))
                                  for k in self.shape.key)
        staged = sql.SQL(", ").join(self._read(c) for c in self.shape.key_columns)
        return sql.SQL("({}) OPERATOR(pg_catalog.=) ({})").format(live, staged)

    def _text_row(self, alias: str, cols: list[Column]) -> sql.Composable:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL(c.text_sql("{}.{}")).format(sql.Identifier(alias), sql.Identifier(c.name))
            for c in cols))

    def _fill_wanted(self) -> sql.Composable:
        if not self.value_cols:
            return sql.SQL("false")
        return sql.SQL(" OR ").join(
            sql.SQL("({} IS NULL AND s.{} IS NOT NULL)").format(
                sql.SQL(c.text_sql("t.{}")).format(sql.Identifier(c.name)),
                _c(self.index[c.name]))
            for c in self.value_cols)

    def classify(self) -> sql.Composable:
        """Each staged row's state on the node (``STATE_*``), by ``ord``."""
        staged_text = sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL(c.text_sql("{}")).format(self._read(c)) for c in self.columns))
        return sql.SQL(
            "SELECT s.ord, CASE WHEN t.ctid IS NULL THEN {absent} "
            "WHEN s.op OPERATOR(pg_catalog.=) 'u' THEN CASE WHEN {live} IS NOT DISTINCT FROM "
            "{staged} THEN {same} ELSE {differs} END "
            "WHEN s.op OPERATOR(pg_catalog.=) 'f' THEN CASE WHEN {fill} THEN {differs} "
            "ELSE {same} END "
            "ELSE {differs} END "
            "FROM {stage} s LEFT JOIN {table} t ON {match} ORDER BY s.ord"
        ).format(absent=sql.Literal(STATE_ABSENT), same=sql.Literal(STATE_SAME),
                 differs=sql.Literal(STATE_DIFFERS), live=self._text_row("t", self.columns),
                 staged=staged_text, fill=self._fill_wanted(), stage=sql.Identifier(STAGE),
                 table=self.table, match=self._key_match())

    def lock_staged(self) -> sql.Composable:
        """Lock the node's rows whose keys are staged, until the transaction ends."""
        return sql.SQL("SELECT 1 FROM {} t JOIN {} s ON {} FOR UPDATE OF t").format(
            self.table, sql.Identifier(STAGE), self._key_match())

    def delete(self) -> sql.Composable:
        """Delete the staged ``d`` keys; ``rowcount`` is how many rows went."""
        return sql.SQL("DELETE FROM {} t USING {} s WHERE s.op OPERATOR(pg_catalog.=) 'd' "
                       "AND {}").format(
            self.table, sql.Identifier(STAGE), self._key_match())

    def upsert(self, update: bool) -> sql.Composable:
        """Insert the staged ``u`` rows; update those that exist when ``update``.

        Returns one row: (inserted, updated). Rows already equal are left alone
        (not even rewritten), so they count as neither.
        """
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in self.columns)
        casts = sql.SQL(", ").join(self._cast(c) for c in self.columns)
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in self.shape.key)
        if update and self.value_cols:
            sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c.name))
                                      for c in self.value_cols)
            action = sql.SQL("DO UPDATE SET {} WHERE {} IS DISTINCT FROM {}").format(
                sets, self._text_row("t", self.value_cols),
                self._text_row("excluded", self.value_cols))
        else:
            action = sql.SQL("DO NOTHING")
        return sql.SQL(
            "WITH w AS (INSERT INTO {table} AS t ({names}) OVERRIDING SYSTEM VALUE "
            "SELECT {casts} FROM {stage} s WHERE s.op OPERATOR(pg_catalog.=) 'u' "
            "ON CONFLICT ({keys}) {action} RETURNING (xmax OPERATOR(pg_catalog.=) 0) AS inserted) "
            "SELECT pg_catalog.count(*) FILTER (WHERE inserted), "
            "pg_catalog.count(*) FILTER (WHERE NOT inserted) FROM w"
        ).format(table=self.table, names=names, casts=casts, stage=sql.Identifier(STAGE),
                 keys=keys, action=action)

    def fill_nulls(self) -> sql.Composable:
        """Fill the node's NULL columns from the staged ``f`` rows; ``rowcount`` rows change."""
        if not self.value_cols:
            return sql.SQL("SELECT 1 WHERE false")
        sets = sql.SQL(", ").join(
            sql.SQL("{0} = CASE WHEN {2} IS NULL THEN {1} ELSE t.{0} END").format(
                sql.Identifier(c.name), self._cast(c),
                sql.SQL(c.text_sql("t.{}")).format(sql.Identifier(c.name)))
            for c in self.value_cols)
        return sql.SQL("UPDATE {} t SET {} FROM {} s WHERE s.op OPERATOR(pg_catalog.=) 'f' "
                       "AND {} AND ({})").format(
            self.table, sets, sql.Identifier(STAGE), self._key_match(), self._fill_wanted())
