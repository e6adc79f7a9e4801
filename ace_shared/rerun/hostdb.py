"""A ``hostdb`` rerun: the keys go into a temp table on each node and are joined there.

For very large diffs. Each node gets the sorted keys by COPY, streamed from
the batch files (so they are never all in memory), numbered by their
position ``ord`` in the table's key order. The node joins them to the table
and returns the rows it has in ``ord`` order through a server-side cursor,
fetched in chunks by one thread per node into a small queue; the rows of all
nodes are merged by ``ord``, compared, and the differing ones written to one
partial file. Memory stays at a few chunks per node, whatever the diff's size.
The only thing written on a node is its session's temp table.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import psycopg2
from psycopg2 import sql

from ace_shared.diff import queries
from ace_shared.diff.provenance import origin_node
from ace_shared.diff.queries import PINNED_PLAN
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.workdir import BatchResult, DiffRecord, WorkDir
from ace_shared.difffile.format import row_json, with_meta
from ace_shared.nodes.connection import NodeTarget, connect, node_errors, query_error
from ace_shared.nodes.shape import TableShape
from ace_shared.repair.queries import COPY_CHUNK, LineStream, copy_field
from ace_shared.rerun.batch import write_partial

KEYS_TABLE = "ace_rerun_keys"
CHUNK_ROWS = 5000
QUEUE_CHUNKS = 2
_DONE = object()


def _key_lines(spec: DiffSpec, key_batches: int) -> Iterator[str]:
    work = WorkDir(spec.work_dir)
    ord_ = 0
    for index in range(key_batches):
        for k in work.read_keys(index):
            yield "\t".join([str(ord_)] + [copy_field(v) for v in k]) + "\n"
            ord_ += 1


def _create_keys(shape: TableShape) -> sql.Composable:
    """The keys' temp table, its columns of the keys' *base* types: COPY reads each key
    with its type's input function (no domain CHECK, no cast from text)."""
    cols = sql.SQL("").join(sql.SQL(", {} {}").format(sql.Identifier(f"k{i}"),
                                                      sql.SQL(c.cast_sql))
                            for i, c in enumerate(shape.key_columns))
    return sql.SQL("CREATE TEMP TABLE {} (ord pg_catalog.int8{})").format(
        sql.Identifier(KEYS_TABLE), cols)


def _fetch_rows(shape: TableShape) -> sql.Composable:
    table = sql.SQL("{}.{}").format(sql.Identifier(shape.table.schema),
                                    sql.Identifier(shape.table.table))
    cols = sql.SQL(", ").join(sql.SQL(c.text_sql("t.{}")).format(sql.Identifier(c.name))
                              for c in shape.columns)
    live = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in shape.key)
    staged = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(f"k{i}"))
                                for i in range(len(shape.key)))
    # then each row's commit time and origin, as a diff fetches them
    return sql.SQL("SELECT s.ord, {}, {} FROM {} s JOIN {} t ON ({}) OPERATOR(pg_catalog.=) ({}) "
                   "{} ORDER BY s.ord").format(
        cols, queries.COMMIT_META, sql.Identifier(KEYS_TABLE), table, live, staged,
        queries.commit_meta_join(sql.SQL("t.xmin")))


class NodeStream:
    """One node's rows for the staged keys, in ``ord`` order, fetched ahead by a thread."""

    def __init__(self, target: NodeTarget, spec: DiffSpec, key_batches: int) -> None:
        self.target = target
        self.spec = spec
        self.key_batches = key_batches
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=f"ace-rerun-{target.node}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            with suppress(queue.Full):
                self.chunks.put(item, timeout=0.2)
                return True
        return False

    def _produce(self) -> None:
        try:
            with node_errors(self.target.node):
                conn = connect(self.target)
                try:
                    self._stream(conn)
                finally:
                    with suppress(psycopg2.Error):
                        conn.close()
        except psycopg2.Error as exc:
            # by SQLSTATE, never the server's text: it may quote the rows' values
            self._put(query_error(self.target.node, exc))
            return
        except BaseException as exc:  # handed to the merging thread, which raises it
            self._put(exc)
            return
        self._put(_DONE)

    def _stream(self, conn: Any) -> None:
        shape = self.spec.shape
        with conn.cursor() as cur:
            cur.execute(_create_keys(shape))
            cols = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(f"k{i}"))
                                    for i in range(len(shape.key)))
            cur.copy_expert(sql.SQL("COPY {} (ord{}) FROM STDIN").format(
                sql.Identifier(KEYS_TABLE), cols),
                LineStream(_key_lines(self.spec, self.key_batches)), size=COPY_CHUNK)
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(KEYS_TABLE)))
            cur.execute(PINNED_PLAN)  # one index probe per key, whatever the estimates
        with conn.cursor(name="ace_rerun_rows") as named:
            named.itersize = CHUNK_ROWS
            named.execute(_fetch_rows(shape))
            while not self._stop.is_set():
                chunk = named.fetchmany(CHUNK_ROWS)
                if not chunk or not self._put(chunk):
                    break
        conn.rollback()

    def rows(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        while True:
            item = self.chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            for r in item:
                yield int(r[0]), tuple(r[1:])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def merged_records(spec: DiffSpec, streams: dict[str, NodeStream]) -> Iterator[DiffRecord]:
    """Rows of every node merged by ``ord``; yield the keys whose rows are not all equal."""
    names = spec.shape.column_names
    key_idx = [names.index(k) for k in spec.shape.key]
    nodes = list(spec.nodes)
    iters = {n: s.rows() for n, s in streams.items()}
    heads = {n: next(iters[n], None) for n in nodes}
    while True:
        live = [h[0] for h in heads.values() if h is not None]
        if not live:
            return
        current = min(live)
        values: list[tuple[Any, ...] | None] = []
        for n in nodes:
            head = heads[n]
            if head is not None and head[0] == current:
                values.append(head[1])
                heads[n] = next(iters[n], None)
            else:
                values.append(None)
        width = len(names)  # the row's columns; its provenance follows
        first = values[0]
        if first is not None and all(v is not None and v[:width] == first[:width]
                                     for v in values[1:]):
            continue  # the same text on every node: most keys after a repair
        present = next(v for v in values if v is not None)
        texts: dict[str, str | None] = {}
        for n, v in zip(nodes, values, strict=True):
            if v is None:
                texts[n] = None
                continue
            origin = origin_node(n, v[width + 1], v[width + 2], spec.origin_names.get(n, {}))
            texts[n] = with_meta(row_json(dict(zip(names, v[:width], strict=True))),
                                 v[width], origin)
        yield DiffRecord(tuple(present[i] for i in key_idx), texts)


def rerun_hostdb(spec: DiffSpec, key_batches: int, keys_total: int,
                 targets: tuple[NodeTarget, ...]) -> BatchResult:
    """Re-check every key of the job on the nodes themselves; one partial file (part 0)."""
    by_node = {t.node: t for t in targets}
    streams = {n: NodeStream(by_node[n], spec, key_batches) for n in spec.nodes}
    for s in streams.values():
        s.start()
    try:
        return write_partial(spec, 0, merged_records(spec, streams), keys_total)
    finally:
        for s in streams.values():
            s.stop()
