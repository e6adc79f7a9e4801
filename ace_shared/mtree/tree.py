"""What every mtree command shares: the job's node sessions, the table, and trust in a tree.

A tree is trusted only if, on every node, its catalogue row matches the
table as it is now (same table object, same columns and key), ACE's triggers
are all there and enabled as built, and its block boundaries are the same
as on every other node. Anything else is refused in one sentence that says to
rebuild: a stale tree would silently hide differences. (A ``TRUNCATE`` and a
stale leaf are healed by the update instead: :mod:`~ace_shared.mtree.update`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.config import Settings
from ace_shared.diff.plan import read_common_shape, resolve_targets
from ace_shared.errors import AceError, TableError
from ace_shared.mtree import objects, trust, watch
from ace_shared.mtree.request import MtreeRequest
from ace_shared.nodes.connection import NodeTarget
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape, read_shape, reconcile_shapes
from ace_shared.words import nodes_phrase

T = TypeVar("T")
MIN_SERVER_VERSION = 140000  # bit_xor, the aggregate the leaves are folded with


@dataclass(frozen=True)
class TreeRow:
    """One node's catalogue row for a tree."""

    table_oid: int
    shape_sig: str
    block_rows: int
    bounds_sig: str
    format_version: int = objects.FORMAT_VERSION
    altered_seq: int = 0  # the watch's number for the table when the tree was built


@dataclass
class Job:
    """An mtree command's view of the cluster: sessions that may write, and the table."""

    request: MtreeRequest
    dbname: str
    targets: tuple[NodeTarget, ...]
    sessions: NodeSessions

    holders: NodeSessions | None = None  # connections for the tree lock, opened early
    holders_connected: Future[None] | None = None
    key_bases: tuple[str, ...] | None = None  # the key's base types, once read (keytypes)

    @property
    def nodes(self) -> list[str]:
        return list(self.sessions.order)

    def connect_lock_holders(self) -> None:
        """Open the tree lock's connections now, while the command's first checks run:
        connecting is most of what taking the lock costs when nobody holds it."""
        if self.holders is None:
            self.holders = NodeSessions(self.targets, threads_per_node=1, readonly=False)
            holders = self.holders
            pool = ThreadPoolExecutor(max_workers=1)
            self.holders_connected = pool.submit(_connect_all, holders)
            pool.shutdown(wait=False)


@contextmanager
def open_job(request: MtreeRequest, settings: Settings, threads: int = 1,
             sessions: NodeSessions | None = None) -> Iterator[Job]:
    """The command's job, on ``sessions`` when given (a long-lived process's own, which may
    write; they stay open), else on sessions of its own, closed when it ends.

    The tree lock's connections are always the job's own (:func:`tree_lock`).
    """
    dbname, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                      settings, request.role)
    owned = sessions is None
    if sessions is None:
        sessions = NodeSessions(targets, threads_per_node=threads, readonly=False)
    job = Job(request, dbname, targets, sessions)
    try:
        yield job
    finally:
        if owned:
            sessions.close()
        if job.holders is not None:  # opened early, never used: the command stopped before
            if job.holders_connected is not None:
                job.holders_connected.exception()  # wait for the connecting to end
            job.holders.close()


# PostgreSQL's advisory locks take two int4 keys: ACE's mtree locks use this first one
LOCK_SPACE = int.from_bytes(b"acem", "big")


def lock_key(table: TableName) -> int:
    """The tree's second advisory-lock key: its :func:`~objects.tree_key` as an int4."""
    value = int(objects.tree_key(table)[:8], 16)
    return value - (1 << 32) if value >= 1 << 31 else value


@contextmanager
def tree_lock(job: Job, table: TableName) -> Iterator[None]:
    """Hold the table's tree lock on every node while a command changes or walks its tree.

    Two commands on one tree at once (a scheduled re-check and an operator's
    update) would otherwise both fold the same change log, one failing on a
    serialization error, or split a leaf the other just renumbered. With the
    lock, the second waits for the first, up to the sessions' lock timeout, and
    then says so. It is first tried on every node at once (:func:`_take_at_once`);
    if that fails it is taken node by node in name order, so two commands can
    never each hold a node the other waits for; and on connections of its own,
    so it ends with the command's process (server-side keepalives notice a
    vanished host within about a minute).
    """
    key = lock_key(table)
    job.connect_lock_holders()  # every node at once (if not already)
    holders, connected = job.holders, job.holders_connected
    assert holders is not None and connected is not None
    job.holders = job.holders_connected = None  # a later lock opens its own

    def take(node: str) -> Callable[[cursor], None]:
        def run(cur: cursor) -> None:
            try:  # waits as long as the session's lock_timeout allows
                cur.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (LOCK_SPACE, key))
            except psycopg2.errors.LockNotAvailable:
                cur.connection.rollback()
                raise TableError(
                    f"Another mtree command is still working on the tree of table "
                    f"{table.display} on node {node}; run this one again once it has "
                    "finished.") from None
        return run
    try:
        connected.result()
        if not _take_at_once(holders, key):
            for node in sorted(job.nodes):
                holders.on_one(node, take(node))
        yield
    finally:
        holders.close()  # closing the connections releases the locks


def _take_at_once(holders: NodeSessions, key: int) -> bool:
    """Try the tree lock on every node at once, without waiting; if one node's is held,
    give back the others' and say so (False).

    Taking them one node after another costs a round trip per node; trying them
    all at once costs one, and, since a try never waits, cannot deadlock with
    another command taking them in order.
    """
    def attempt(cur: cursor) -> bool:
        cur.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, key))
        return bool(cur.fetchone()[0])
    taken = holders.on_all(attempt)
    if all(taken.values()):
        return True

    def give_back(cur: cursor) -> None:  # the holders' connections hold nothing else
        cur.execute("SELECT pg_catalog.pg_advisory_unlock_all()")
    for node in [n for n, got in taken.items() if got]:
        holders.on_one(node, give_back)
    return False


def _connect_all(sessions: NodeSessions) -> None:
    """Open the sessions' connection to every node (by running nothing on each)."""
    sessions.on_all(lambda cur: None)


def each_node(job: Job, make: Callable[[str], Callable[[cursor], T]]) -> dict[str, T]:
    """Run ``make(node)`` on every node at once; results by node, the first error raised."""
    return each_session(job.sessions, make)


def each_session(sessions: NodeSessions,
                 make: Callable[[str], Callable[[cursor], T]]) -> dict[str, T]:
    """:func:`each_node` for sessions without a job (a worker's, for one step of a job)."""
    return sessions.start_each(make)()


def in_transaction(fn: Callable[[cursor], T], repeatable: bool = False) -> Callable[[cursor], T]:
    """Run ``fn`` in one transaction on a node and commit it (sessions roll back otherwise)."""
    def run(cur: cursor) -> T:
        if repeatable:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        result = fn(cur)
        cur.connection.commit()
        return result
    return run


def table_shape(job: Job, check_kind: bool = True) -> TableShape:
    """The table's common shape, checked to be one an mtree can track.

    ``check_kind=False`` leaves out the check that it is a plain table, for commands on a
    built tree: its table is the one it was built for (:func:`check_tree` compares
    the table's oid), which was plain, and a table's kind never changes.
    """
    table = job.request.table
    assert table is not None
    shape = _new_enough(read_common_shape(job.sessions, table))
    if not check_kind:
        return shape
    kinds = job.sessions.on_all(lambda cur: _relkind(cur, shape))
    for node, kind in kinds.items():
        if kind != "r":
            raise TableError(f"Table {shape.table.display} is partitioned on node {node}; "
                             "mtree tracks plain tables only (use table-diff).")
    return shape


def open_table(job: Job, then: Callable[[cursor, TableShape, str], T],
               ) -> tuple[TableShape, dict[str, T]]:
    """:func:`require_schema`, then :func:`table_shape` (``check_kind=False``), then
    ``then(cur, shape, node)``, all in one round trip per node and every node at once.

    A re-check's fixed cost is mostly round trips, one after another; these three
    need nothing from one another's answers but that each succeeded. Their errors
    are raised as the separate steps raised them: the schema's first, then the
    shapes' (the first node's in the job's order), then ``then``'s.
    """
    table = job.request.table
    assert table is not None
    cluster = job.request.cluster_name

    def first(node: str) -> Callable[[cursor], tuple[str, Any, Any]]:
        def run(cur: cursor) -> tuple[str, Any, Any]:
            state = _schema_state(cur, node, cluster)
            if state != "current":
                return state, None, None
            cur.connection.rollback()
            try:
                shape = read_shape(cur, table, node)
            except AceError as exc:  # raised below, once every node's schema is known good
                return state, exc, None
            try:
                return state, shape, then(cur, shape, node)
            except AceError as exc:
                return state, shape, exc
        return run
    answers = each_node(job, first)
    _schema_errors(job, {n: state for n, (state, _, _) in answers.items()})
    shapes: dict[str, TableShape] = {}
    for node, (_, shape, _) in answers.items():
        if isinstance(shape, AceError):
            raise shape
        shapes[node] = shape
    common = _new_enough(reconcile_shapes(shapes))
    results: dict[str, T] = {}
    for node, (_, _, result) in answers.items():
        if isinstance(result, AceError):
            raise result
        results[node] = result
    return common, results


def _new_enough(shape: TableShape) -> TableShape:
    """``shape``, if every node runs a PostgreSQL mtree works on."""
    if shape.server_version_num < MIN_SERVER_VERSION:
        raise TableError("mtree needs PostgreSQL 14 or newer on every node.")
    return shape


def _relkind(cur: cursor, shape: TableShape) -> str:
    cur.execute("SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE n.nspname "
                "OPERATOR(pg_catalog.=) %s AND c.relname OPERATOR(pg_catalog.=) %s",
                (shape.table.schema, shape.table.table))
    return str(cur.fetchone()[0])


def table_identity(cur: cursor, shape: TableShape) -> tuple[int, str]:
    """The table's oid and its owner's name on one node."""
    cur.execute("SELECT c.oid, pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
                "WHERE n.nspname OPERATOR(pg_catalog.=) %s AND c.relname OPERATOR(pg_catalog.=) %s",
                (shape.table.schema, shape.table.table))
    oid, owner = cur.fetchone()
    return int(oid), str(owner)


def require_schema(job: Job) -> None:
    cluster = job.request.cluster_name

    _schema_errors(job, each_node(job, lambda node: lambda cur: _schema_state(
        cur, node, cluster)))


def _schema_state(cur: cursor, node: str, cluster: str) -> str:
    """The node's :func:`~objects.schema_state`, its catalogue checked when current."""
    state = objects.schema_state(cur)
    if state == "current":  # with ACE's rights only while nothing on it runs code
        trust.guard_catalogue(cur, node, trust.ACCESS_SHARE, cluster)
    return state


def _schema_errors(job: Job, present: dict[str, str]) -> None:
    """Raise the sentence for the first of the nodes whose mtree schema is missing or older."""
    missing = [n for n, state in present.items() if state == "missing"]
    if missing:
        raise TableError(f"ACE's mtree schema is not set up on {nodes_phrase(missing)}; run "
                         f"'ace mtree init {job.request.cluster_name}' first.")
    older = [n for n, state in present.items() if state == "older"]
    if older:  # told from pg_catalog alone: a catalogue made before it had no defaults
        raise TableError(f"ACE's mtree schema on {nodes_phrase(older)} was set up by an "
                         f"older version of ACE; run 'ace mtree init {job.request.cluster_name}' "
                         "again, then 'ace mtree build' for each tree.")


def read_tree_row(cur: cursor, key: str) -> TreeRow | None:
    cur.execute(sql.SQL("SELECT table_oid, shape_sig, block_rows, bounds_sig, format_version, "
                        "altered_seq FROM {} WHERE tree_key OPERATOR(pg_catalog.=) %s")
                .format(objects.TREES), (key,))
    row = cur.fetchone()
    return None if row is None else TreeRow(int(row[0]), row[1], int(row[2]), row[3],
                                            int(row[4]), int(row[5]))


def check_tree(cur: cursor, shape: TableShape, key: str, node: str) -> TreeRow:
    """The node's tree row, if the tree can be trusted; else one sentence saying why not."""
    rebuild = "run 'ace mtree build' for it again"
    row = read_tree_row(cur, key)
    name = shape.table.display
    if row is None:
        raise missing_tree(shape, node)
    if row.format_version != objects.FORMAT_VERSION:
        what = ("whose change log held the key in its own type" if row.format_version < 2
                else "which kept no changed keys")
        raise TableError(f"The Merkle tree of table {name} on node {node} was built by an older "
                         f"version of ACE, {what}; {rebuild}.")
    oid, _ = table_identity(cur, shape)
    if oid != row.table_oid:
        raise TableError(f"Table {name} on node {node} is not the table its Merkle tree was "
                         f"built for (dropped and created again, or restored); {rebuild}.")
    if row.shape_sig != objects.shape_signature(shape):
        raise TableError(f"Table {name} changed its columns or key on node {node} since its "
                         f"Merkle tree was built; {rebuild}.")
    state = objects.tracking_state(cur, oid)
    if state != objects.EXPECTED_TRIGGERS:
        raise TableError(f"Change tracking of table {name} on node {node} was dropped or "
                         f"disabled, so changes may have been missed; {rebuild}.")
    if watch.altered_seq(cur, oid) != row.altered_seq:
        raise TableError(f"Table {name} was altered (ALTER TABLE) on node {node} since its "
                         f"Merkle tree was built; {rebuild}.")
    return row


def missing_tree(shape: TableShape, node: str) -> TableError:
    """The sentence for a tree whose tables are not there."""
    return TableError(f"Table {shape.table.display} has no Merkle tree on node {node} (never "
                      "built, being built, torn down, lost in a crash, or built by an older "
                      "version of ACE); build it with 'ace mtree build'.")


def reading(shape: TableShape, key: str, node: str,
            fn: Callable[[cursor], T]) -> Callable[[cursor], T]:
    """``fn`` in a transaction that first locks and checks the tree for reading."""
    def run(cur: cursor) -> T:
        guard(cur, shape, key, node, trust.ACCESS_SHARE)
        return fn(cur)
    return run


def guard(cur: cursor, shape: TableShape, key: str, node: str, mode: str) -> None:
    """Lock and check the catalogue and the tree's tables (:mod:`~ace_shared.mtree.trust`):
    the first statement of every transaction that reads or writes them."""
    if not trust.guard_tree(cur, key, shape.table.display, node, mode):
        raise missing_tree(shape, node)


def check_same_blocks(rows: dict[str, TreeRow], shape: TableShape) -> TreeRow:
    """Every node's tree must cut the key space at the same boundaries."""
    first_node = next(iter(rows))
    first = rows[first_node]
    for node, row in rows.items():
        if (row.bounds_sig, row.block_rows) != (first.bounds_sig, first.block_rows):
            raise TableError(
                f"The Merkle trees of table {shape.table.display} on nodes {first_node} and "
                f"{node} have different blocks (built separately); run 'ace mtree build' "
                "for all nodes together.")
    return first
