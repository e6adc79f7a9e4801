"""A diff file as table-repair and table-rerun see it: summary and pairs known, rows streamed.

:func:`load_diff_file` reads the file once from start to end (bounded memory,
see :mod:`ace_shared.difffile.format`) to check its structure and learn its
summary, its node pairs and how many rows each side lists; rows are read again,
streamed, by whoever needs them. The checks here compare that header with the
cluster and the live table before anything is planned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.difffile.format import (
    METADATA_PREFIX,
    Key,
    Layout,
    Row,
    read_rows,
    read_tail_summary,
)
from ace_shared.errors import DiffFileError
from ace_shared.nodes.cluster import Cluster, load_cluster
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape


@dataclass
class DiffPair:
    """One pair of nodes in a diff file, with how many rows each side lists."""

    left: str
    right: str
    index: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    file: DiffFile | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.left}/{self.right}"

    def other(self, node: str) -> str:
        return self.right if node == self.left else self.left

    def side(self, node: str) -> list[Row]:
        """One side's rows, read whole (for small files; repairs stream with ``iter_rows``)."""
        assert self.file is not None
        return [r for i, n, r, _ in read_rows(self.file.path)
                if i == self.index and n == node]


@dataclass
class DiffFile:
    """A checked diff file: its summary and pairs; rows are streamed by :meth:`iter_rows`."""

    path: Path
    summary: dict[str, Any]
    pairs: list[DiffPair]
    column_sets: set[tuple[str, ...]] = field(default_factory=set)
    # False while only the summary was read (:func:`load_diff_header`): a pass over the
    # rows (:meth:`adopt`) then sets the pairs, counts and columns the file really has
    complete: bool = True

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
        return sum(sum(p.counts.values()) for p in self.pairs)

    def row_columns(self) -> set[str]:
        """Every column name used by any row (metadata columns excluded)."""
        return {str(c) for names in self.column_sets for c in names
                if not str(c).startswith(METADATA_PREFIX)}

    def columns_in_every_row(self) -> set[str]:
        sets = [set(map(str, names)) for names in self.column_sets]
        return set.intersection(*sets) if sets else set()

    def iter_rows(self) -> Iterator[tuple[DiffPair, str, Row]]:
        """Every row with its pair and node, read from the file as it goes."""
        for index, node, row, _ in read_rows(self.path):
            yield self.pairs[index], node, row

    def adopt(self, layout: Layout) -> None:
        """Take the pairs, row counts and columns a full pass over the rows found."""
        self.pairs = []
        for i, (left, right) in enumerate(layout.pairs):
            counts = {n: layout.counts.get((i, n), 0) for n in (left, right)}
            self.pairs.append(DiffPair(left, right, i, counts, self))
        self.column_sets = set(layout.column_sets)
        self.complete = True


def _existing(path: str | Path) -> Path:
    if not str(path).strip():
        raise DiffFileError("A diff file is required; pass the path table-diff printed.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DiffFileError(f"The diff file {p} does not exist; pass the path table-diff printed.")
    return p


def load_diff_header(path: str | Path) -> DiffFile:
    """The summary and pairs of a diff file, read from its end when this project wrote it.

    What a front door checks before it queues work (the file is for this
    cluster, database and table; its nodes exist) needs only the summary, so
    a file of any size is checked in milliseconds and in a few kilobytes.
    The rows are checked when the work reads them, and a bad row fails the
    work with a sentence naming the file. A file without a summary at its end
    (the original tool's) is read whole, streamed, as :func:`load_diff_file` does.
    """
    p = _existing(path)
    summary = read_tail_summary(p)
    by_pair = summary.get("diff_rows_by_pair") if summary else None
    if summary is None or not isinstance(by_pair, dict):
        return load_diff_file(p)
    diff = DiffFile(p.resolve(), summary, [], complete=False)
    for i, name in enumerate(by_pair):
        left, _, right = str(name).partition("/")
        diff.pairs.append(DiffPair(left, right, i, {}, diff))
    return diff


def load_diff_file(path: str | Path) -> DiffFile:
    """Check a diff file of either shape in one streamed pass; learn its summary and pairs."""
    p = _existing(path)
    layout = Layout()
    for _ in read_rows(p, layout):
        pass
    diff = DiffFile(p.resolve(), layout.summary, [])
    diff.adopt(layout)
    return diff


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


def open_for_table(settings: Settings, cluster_name: str, table: TableName,
                   dbname: str | None, path: str | Path) -> tuple[Cluster, DiffFile]:
    """The cluster and a diff file's summary, checked against each other.

    What table-repair and table-rerun both need before they queue or run
    anything: the file exists, was written for this cluster, database and
    table, and names only nodes the cluster still has. Only the summary is
    read (see :func:`load_diff_header`), so a front door stays small and
    fast whatever the file's size; no database is touched.
    """
    cluster = load_cluster(settings.cluster_dir, cluster_name)
    diff = load_diff_header(path)
    check_diff_target(diff, cluster_name, table, dbname)
    cluster.database(dbname or diff.database)
    check_diff_nodes(diff, [n.name for n in cluster.nodes], cluster.name)
    return cluster, diff


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
        now = {(c.name, c.display_type) for c in shape.columns}
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
