"""Reading diff files: this project's own and the original tool's.

Both table-repair and table-rerun start from a diff file. Two shapes exist:

* this project's ``{"diffs": {"n1/n2": {"n1": [rows], "n2": [rows]}}, "summary": {...}}``
  whose values are the text PostgreSQL prints for them (``null`` for NULL);
* the original tool's bare ``{"n1/n2": {...}}``, whose values may be JSON
  numbers or booleans, and whose rows may carry ``_Spock_CommitTS_`` /
  ``_Spock_CommitOrigin_`` metadata columns.

Every value is turned back into text here, exactly: numbers keep the literal
digits written in the file (``1.10`` stays ``1.10``, never ``1.1`` or
``1.1000000000000001``), ``NaN``/``Infinity`` keep their spelling, booleans
become ``true``/``false`` and nested JSON is re-serialised with its numbers
untouched. Callers then cast that text to the column's type on the server.
Everything wrong with a file is a :class:`DiffFileError` naming the file.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ace_shared.errors import DiffFileError
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape

Row = dict[str, str | None]
Key = tuple[str, ...]

# The original tool added these commit-metadata columns to every row it wrote.
METADATA_PREFIX = "_Spock_"


class JsonNumber(str):
    """A number exactly as written in the JSON text (so no float rounding can creep in)."""


def _load_json(text: str) -> Any:
    return json.loads(text, parse_float=JsonNumber, parse_int=JsonNumber,
                      parse_constant=JsonNumber)


def _dump_nested(value: Any) -> str:
    """Serialise parsed JSON back to text, writing numbers as they were written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_dump_nested(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_dump_nested(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def text_value(value: Any) -> str | None:
    """The PostgreSQL input text for one value of a diff-file row."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return _dump_nested(value)


@dataclass
class DiffPair:
    """The differing rows of one pair of nodes, each side in the file's (key) order."""

    left: str
    right: str
    rows: dict[str, list[Row]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.left}/{self.right}"

    def side(self, node: str) -> list[Row]:
        return self.rows.get(node, [])

    def other(self, node: str) -> str:
        return self.right if node == self.left else self.left


@dataclass
class DiffFile:
    """A parsed diff file; ``summary`` is empty for the original tool's bare files."""

    path: Path
    summary: dict[str, Any]
    pairs: list[DiffPair]

    @property
    def has_summary(self) -> bool:
        return bool(self.summary)

    @property
    def nodes(self) -> list[str]:
        """The nodes the diff compared (the summary's list, else those named by pairs)."""
        listed = self.summary.get("nodes")
        if isinstance(listed, list) and listed:
            return [str(n) for n in listed]
        seen: list[str] = []
        for p in self.pairs:
            for n in (p.left, p.right):
                if n not in seen:
                    seen.append(n)
        return seen

    @property
    def primary_key(self) -> list[str] | None:
        key = self.summary.get("primary_key")
        return [str(k) for k in key] if isinstance(key, list) and key else None

    @property
    def columns(self) -> list[dict[str, str]] | None:
        cols = self.summary.get("columns")
        if isinstance(cols, list) and cols and all(isinstance(c, dict) for c in cols):
            return [{"name": str(c.get("name")), "type": str(c.get("type"))} for c in cols]
        return None

    @property
    def table(self) -> TableName | None:
        schema, table = self.summary.get("schema_name"), self.summary.get("table_name")
        if isinstance(schema, str) and isinstance(table, str):
            return TableName(schema, table)
        return None

    @property
    def cluster_name(self) -> str | None:
        name = self.summary.get("cluster_name")
        return str(name) if name else None

    @property
    def database(self) -> str | None:
        name = self.summary.get("database")
        return str(name) if name else None

    @property
    def is_partial(self) -> bool:
        return bool(self.summary.get("diff_partial"))

    @property
    def row_count(self) -> int:
        return sum(len(rows) for p in self.pairs for rows in p.rows.values())

    def row_columns(self) -> set[str]:
        """Every column name used by any row (metadata columns excluded)."""
        names: set[str] = set()
        for p in self.pairs:
            for rows in p.rows.values():
                for r in rows:
                    names.update(r)
        return names

    def iter_rows(self) -> Iterator[tuple[DiffPair, str, Row]]:
        for p in self.pairs:
            for node, rows in p.rows.items():
                for r in rows:
                    yield p, node, r


_PLAIN_TYPES = {str, type(None)}


def _clean_row(raw: Any, where: str, plain_keys: dict[tuple[str, ...], bool]) -> Row:
    if not isinstance(raw, dict):
        raise DiffFileError(f"The diff file has a row that is not an object in {where}; "
                            "use a file written by table-diff.")
    names = tuple(raw)
    plain = plain_keys.get(names)
    if plain is None:
        plain = plain_keys[names] = not any(str(k).startswith(METADATA_PREFIX) for k in names)
    # this project's files hold only text and nulls: keep such rows as they are (fast)
    if plain and set(map(type, raw.values())) <= _PLAIN_TYPES:
        return raw
    return {str(k): text_value(v) for k, v in raw.items()
            if not str(k).startswith(METADATA_PREFIX)}


def _parse_pairs(diffs: Any, path: Path) -> list[DiffPair]:
    if not isinstance(diffs, dict):
        raise DiffFileError(f"The diff file {path} has no node pairs; "
                            "use a file written by table-diff.")
    pairs = []
    plain_keys: dict[tuple[str, ...], bool] = {}
    for name, sides in diffs.items():
        parts = str(name).split("/")
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1] \
                or not isinstance(sides, dict):
            raise DiffFileError(f"The diff file {path} has an entry {name!r} that is not a "
                                "node pair like \"n1/n2\"; use a file written by table-diff.")
        left, right = parts
        extra = set(sides) - {left, right}
        if extra:
            raise DiffFileError(f"The diff file {path} lists node {sorted(extra)[0]} under "
                                f"pair {name}; use a file written by table-diff.")
        pair = DiffPair(left, right)
        for node in (left, right):
            rows = sides.get(node)
            rows = [] if rows is None else rows
            if not isinstance(rows, list):
                raise DiffFileError(f"The diff file {path} has no row list for {node} under "
                                    f"pair {name}; use a file written by table-diff.")
            pair.rows[node] = [_clean_row(r, f"pair {name}", plain_keys) for r in rows]
        pairs.append(pair)
    return pairs


def load_diff_file(path: str | Path) -> DiffFile:
    """Read and check a diff file of either shape."""
    p = Path(path).expanduser()
    if not str(path).strip():
        raise DiffFileError("A diff file is required; pass the path table-diff printed.")
    if not p.is_file():
        raise DiffFileError(f"The diff file {p} does not exist; pass the path table-diff printed.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffFileError(f"The diff file {p} cannot be read: {exc}.") from exc
    # A diff file is a few big trees of small objects: cyclic garbage collection would walk
    # them again and again while they are built, for nothing (they hold no cycles).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse_file(p, text)
    finally:
        if collecting:
            gc.enable()


def _parse_file(p: Path, text: str) -> DiffFile:
    try:
        data = _load_json(text)
    except json.JSONDecodeError as exc:
        raise DiffFileError(f"The diff file {p} is not valid JSON ({exc.msg} at line "
                            f"{exc.lineno}); use a file written by table-diff.") from exc
    if not isinstance(data, dict):
        raise DiffFileError(f"The diff file {p} is not a JSON object; "
                            "use a file written by table-diff.")
    if "diffs" in data and isinstance(data.get("diffs"), dict):
        summary = data.get("summary") or {}
        if not isinstance(summary, dict):
            raise DiffFileError(f"The diff file {p} has a summary that is not an object.")
        return DiffFile(p.resolve(), summary, _parse_pairs(data["diffs"], p))
    return DiffFile(p.resolve(), {}, _parse_pairs(data, p))


def check_diff_target(diff: DiffFile, cluster_name: str, table: TableName,
                      dbname: str | None) -> None:
    """Refuse a diff file written for another cluster, database or table.

    Bare files from the original tool carry no summary and cannot be checked
    here; their rows are still checked against the live table's columns.
    """
    if diff.cluster_name and diff.cluster_name != cluster_name:
        raise DiffFileError(f"The diff file {diff.path} was written for cluster "
                            f"{diff.cluster_name}, not {cluster_name}; pass the matching file.")
    if diff.table and diff.table != table:
        raise DiffFileError(f"The diff file {diff.path} is for table {diff.table.display}, not "
                            f"{table.display}; pass the matching file.")
    if dbname and diff.database and diff.database != dbname:
        raise DiffFileError(f"The diff file {diff.path} is for database {diff.database}, not "
                            f"{dbname}; pass the matching file or --dbname.")


def check_diff_nodes(diff: DiffFile, cluster_nodes: list[str], cluster_name: str) -> None:
    """Every node the diff names must still be a node of the cluster."""
    for node in diff.nodes:
        if node not in cluster_nodes:
            raise DiffFileError(f"The diff file {diff.path} names node {node}, which is not in "
                                f"cluster {cluster_name} (it has: {', '.join(cluster_nodes)}).")


def check_diff_shape(diff: DiffFile, shape: TableShape, node: str) -> None:
    """Refuse a diff file whose key or columns no longer match the live table on ``node``."""
    live_names = [c.name for c in shape.columns]
    if diff.primary_key is not None and tuple(diff.primary_key) != tuple(shape.key):
        raise DiffFileError(
            f"The diff file {diff.path} was made with primary key ({', '.join(diff.primary_key)}) "
            f"but table {shape.table.display} on node {node} now has ({', '.join(shape.key)}); "
            "run table-diff again.")
    if diff.columns is not None:
        then = {(c["name"], c["type"]) for c in diff.columns}
        now = {(c.name, c.type_sql) for c in shape.columns}
        if then != now:
            changed = sorted({n for n, _ in then ^ now})
            raise DiffFileError(
                f"The diff file {diff.path} was made when table {shape.table.display} had other "
                f"columns than it has on node {node} now (differing: {', '.join(changed)}); "
                "run table-diff again.")
    unknown = sorted(diff.row_columns() - set(live_names))
    if unknown:
        raise DiffFileError(
            f"The diff file {diff.path} has column {unknown[0]}, which table "
            f"{shape.table.display} on node {node} does not have; run table-diff again.")


def row_key(row: Row, key: list[str] | tuple[str, ...], where: str) -> Key:
    """A row's primary-key values; every key column must be present and not null."""
    out = []
    for k in key:
        v = row.get(k)
        if v is None:
            raise DiffFileError(f"A row in {where} has no value for key column {k}; "
                                "the diff file does not match the table's primary key.")
        out.append(v)
    return tuple(out)
