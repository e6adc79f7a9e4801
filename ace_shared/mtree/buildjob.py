"""``ace mtree build`` as steps any executor can run: plan, hash batches of leaves, finish.

1. **plan** (one step): agree the leaf boundaries on every node, then on each
   node, in one short transaction, drop any old tree and create empty storage
   and the tracking triggers, so every change from then on is logged. The plan
   names each node's leaf table by its oid: later steps write to this build's
   tree only, never to one a second build has made since.
2. **hash a batch** (any worker, any number of times): each batch is a run of
   ranges of ``FANOUT`` leaves. On each node one ``REPEATABLE READ`` transaction
   deletes the batch's leaves (left by an earlier copy of the batch), deletes
   the logged changes whose keys fall in the batch's key span, and hashes its
   leaves, all at that one snapshot: changes committed before it are in the
   hashes and gone from the log, later ones stay logged. Batches have snapshots
   of their own, but every leaf is consistent with what the log still holds for
   its keys, which is all ``update`` needs. A copy run again after its worker
   died does the same at a later snapshot, with the same outcome.
3. **finish** (one step): on each node, only if every leaf is there and the
   table is still the one planned for, build the inner levels and write the
   tree's catalogue row. Until then a tree has no row and every command refuses
   it as missing, so a half-built tree is never trusted.

Markers of a ``TRUNCATE`` are never removed by a batch: after one during the
build, the first update hashes that node's leaves again from the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.diff.job import cut_batches
from ace_shared.diff.plan import agreed_boundaries, read_common_shape
from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.errors import TableError
from ace_shared.mtree import keytypes, leaves, objects, trust, watch
from ace_shared.mtree.tree import Job, each_session, in_transaction, table_identity, tree_lock
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape, shape_from_dict, shape_to_dict

OnRangeDone = Callable[[str, int], None]
LOCAL_BATCH_RANGES = 64  # ranges of FANOUT leaves per transaction when this process builds
RETRIES = 5  # a batch that met a copy of itself on a node is tried again this often


def leaf_lowers(ranges: list[KeyRange]) -> list[Key | None]:
    """The lower bound of every leaf: each range's own, then its inner cuts."""
    out: list[Key | None] = []
    for rng in ranges:
        out.append(rng.lower)
        out.extend(rng.inner)
    return out


def group_leaves(cuts: list[Key], fanout: int = leaves.FANOUT) -> list[KeyRange]:
    """Ranges of ``fanout`` consecutive leaves cut at ``cuts``: each range's inner cuts are
    its leaves' boundaries, so one hashing query per range gives every leaf's hash.
    Range ``i``'s first leaf is leaf ``i * fanout``."""
    bounds: list[Key | None] = [None, *cuts, None]
    out = []
    for i, start in enumerate(range(0, len(bounds) - 1, fanout)):
        end = min(start + fanout, len(bounds) - 1)
        out.append(KeyRange(i, bounds[start], bounds[end], tuple(cuts[start:end - 1])))
    return out


def exact_cuts(job: Job, shape: TableShape, block_rows: int) -> list[Key]:
    """Every ``block_rows``-th key of the node that holds the most rows, kept where every
    node sorts it alike: leaves start even, so few need splitting soon after a build."""
    counted = job.sessions.fetch_all(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
        queries.table_ref(shape)))
    counts = {node: rows[0][0] for node, rows in counted.items()}
    biggest = max(job.nodes, key=lambda n: counts[n])
    rows = job.sessions.fetch_from(biggest, *queries.every_nth_key(shape, block_rows, None))
    return agreed_boundaries(job.sessions, shape, [tuple(r) for r in rows])


@dataclass(frozen=True)
class BuildSpec:
    """A planned build as every step sees it: small, JSON-able, nothing secret."""

    task_id: str
    cluster_name: str
    dbname: str
    nodes: tuple[str, ...]
    role: str | None
    shape: TableShape
    block_rows: int
    leaves: int
    tables: dict[str, int]  # node -> the table's oid when the build began
    storage: dict[str, int]  # node -> the oid of this build's leaf table
    triggers: dict[str, str]  # node -> the row versions of ACE's triggers as created
    work_dir: str
    key_bases: tuple[str, ...] = ()  # the key's built-in base types (keytypes.key_bases)

    @property
    def key(self) -> str:
        return objects.tree_key(self.shape.table)

    @property
    def cast_shape(self) -> TableShape:
        """The shape whose key types are the base types: for casts and ACE's tables."""
        return keytypes.cast_shape(self.shape, self.key_bases)

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "cluster_name": self.cluster_name,
                "dbname": self.dbname, "nodes": list(self.nodes), "role": self.role,
                "shape": shape_to_dict(self.shape), "block_rows": self.block_rows,
                "leaves": self.leaves, "tables": self.tables, "storage": self.storage,
                "triggers": self.triggers, "work_dir": self.work_dir,
                "key_bases": list(self.key_bases)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildSpec:
        return cls(d["task_id"], d["cluster_name"], d["dbname"], tuple(d["nodes"]), d["role"],
                   shape_from_dict(d["shape"]), int(d["block_rows"]), int(d["leaves"]),
                   {k: int(v) for k, v in d["tables"].items()},
                   {k: int(v) for k, v in d["storage"].items()}, dict(d["triggers"]),
                   d["work_dir"], _key_bases(d))


def _key_bases(d: dict[str, Any]) -> tuple[str, ...]:
    if "key_bases" not in d:  # planned before keys were stored in their base types
        raise TableError(f"The build of table {d['shape']['schema']}.{d['shape']['table']} was "
                         "planned by an older version of ACE; run 'ace mtree build' for it "
                         "again.")
    return tuple(d["key_bases"])


@dataclass
class BuildJob:
    """A planned build: its spec and its batches of leaf ranges."""

    spec: BuildSpec
    batches: list[list[KeyRange]]

    @property
    def ranges_total(self) -> int:
        return sum(len(b) for b in self.batches)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(),
                "batches": [[r.to_json() for r in batch] for batch in self.batches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildJob:
        return cls(BuildSpec.from_dict(d["spec"]),
                   [[KeyRange.from_json(r) for r in batch] for batch in d["batches"]])


def _leaf_table_oid(cur: cursor, key: str) -> int | None:
    cur.execute("SELECT pg_catalog.to_regclass(%s)::pg_catalog.oid",
                (f"{objects.SCHEMA}.blocks_{key}",))
    found = cur.fetchone()[0]
    return None if found is None else int(found)


def _trigger_versions(cur: cursor, table_oid: int) -> str:
    """The row versions (``xmin``) of ACE's triggers on the table.

    Switching a trigger off and on again writes its catalogue row twice: the
    versions differ afterwards even though the trigger looks as it was. While
    a tree is built no ``ALTER TABLE`` is watched (that needs the tree's
    catalogue row), so the build compares these instead.
    """
    cur.execute("SELECT pg_catalog.string_agg(pg_catalog.concat(tgname, ':', xmin), ',' "
                "ORDER BY tgname) FROM pg_catalog.pg_trigger WHERE tgrelid "
                "OPERATOR(pg_catalog.=) %s AND tgname OPERATOR(pg_catalog.~~) %s",
                (table_oid, objects.TRIGGER_PREFIX.replace("_", r"\_") + "%"))
    return str(cur.fetchone()[0])


def _start_tree(shape: TableShape, cast: TableShape, key: str, node: str,
                cluster: str) -> Callable[[cursor], tuple[int, int, str]]:
    def start(cur: cursor, node: str) -> tuple[int, int, str]:
        # the catalogue row is deleted, then the tree's tables made afresh, by the builder
        if not trust.guard_catalogue(cur, node, trust.ROW_EXCLUSIVE, cluster):
            raise TableError(f"ACE's mtree schema is not set up on node {node}; run "
                             f"'ace mtree init {cluster}' first.")
        oid, owner = table_identity(cur, shape)
        cur.execute(sql.SQL("DELETE FROM {} WHERE tree_key OPERATOR(pg_catalog.=) %s")
                    .format(objects.TREES), (key,))
        objects.create_storage(cur, cast, key)
        objects.create_tracking(cur, cast, key, owner)
        storage = _leaf_table_oid(cur, key)
        assert storage is not None
        return oid, storage, _trigger_versions(cur, oid)
    return in_transaction(lambda cur: start(cur, node))


def plan_build(job: Job, shape: TableShape, task_id: str, work_dir: str,
               slots: int | None = None, tasks_per_process: int = 1) -> BuildJob:
    """Agree the leaves, start tracking on every node, and cut the hashing into batches.

    ``slots`` counts the fleet's worker processes (None: this process hashes, in
    batches of ``LOCAL_BATCH_RANGES`` ranges).
    """
    block_rows = job.request.block_rows
    bases = keytypes.key_bases(job.sessions, shape)
    cast = keytypes.cast_shape(shape, bases)
    ranges = group_leaves(exact_cuts(job, cast, block_rows))
    key = objects.tree_key(shape.table)
    with tree_lock(job, shape.table):  # an update or re-check running now finishes first
        started = each_session(job.sessions, lambda node: _start_tree(
            shape, cast, key, node, job.request.cluster_name))
    spec = BuildSpec(task_id, job.request.cluster_name, job.dbname, tuple(job.nodes),
                     job.request.role, shape, block_rows, len(leaf_lowers(ranges)),
                     {n: t for n, (t, _, _) in started.items()},
                     {n: s for n, (_, s, _) in started.items()},
                     {n: v for n, (_, _, v) in started.items()}, work_dir, bases)
    batch_size = None if slots is not None else LOCAL_BATCH_RANGES
    return BuildJob(spec, cut_batches(ranges, batch_size, slots, tasks_per_process))


def _superseded(spec: BuildSpec, node: str) -> TableError:
    return TableError(f"The Merkle tree of table {spec.shape.table.display} on node {node} was "
                      "removed or built again by another command while this build ran; "
                      "run 'ace mtree build' for it again.")


def _key_span(shape: TableShape, lower: Key | None, upper: Key | None,
              params: queries.Params, changes_only: bool = True) -> sql.Composable:
    """Log rows whose key is in ``[lower, upper)``: changes, not markers, when ``changes_only``
    (kept keys have no sign)."""
    log = keytypes.logged_shape(shape)
    conds: list[sql.Composable] = [sql.SQL("sign OPERATOR(pg_catalog.=) ANY ('{-1,1}')")
                                   if changes_only else sql.SQL("true")]
    for bound, symbol in ((lower, ">="), (upper, "<")):
        if bound is not None:
            conds.append(sql.SQL("{} {} {}").format(
                queries.key_tuple(log), queries.op(symbol), queries.bound(log, bound, params)))
    return sql.SQL(" AND ").join(conds)


def _hold_storage(cur: cursor, spec: BuildSpec, node: str, mode: str) -> None:
    """Lock this build's leaf table, or say the build was superseded.

    Batches take ``ROW EXCLUSIVE`` as their first statement, so their snapshot
    comes after it; finishing takes ``SHARE``. A batch therefore either commits
    before the tree is marked ready, or starts after and sees it so: no leaf is
    written under inner levels that were built without it.
    """
    try:
        cur.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(
            objects.obj("blocks", spec.key), sql.SQL(mode)))
    except psycopg2.errors.UndefinedTable:
        raise _superseded(spec, node) from None
    # the catalogue and the other tables, checked as every writer does (trust.py)
    if not trust.lock(cur, [trust.CATALOGUE, *(f"{kind}_{spec.key}" for kind in objects.KINDS
                                               if kind != "blocks")], trust.ROW_EXCLUSIVE):
        raise _superseded(spec, node)
    trust.check_tree_tables(cur, spec.key, spec.shape.table.display, node)
    if _leaf_table_oid(cur, spec.key) != spec.storage[node]:
        raise _superseded(spec, node)


def _is_ready(cur: cursor, key: str) -> bool:
    cur.execute(sql.SQL("SELECT 1 FROM {} WHERE tree_key OPERATOR(pg_catalog.=) %s")
                .format(objects.TREES), (key,))
    return cur.fetchone() is not None


def _hash_on_node(spec: BuildSpec, ranges: list[KeyRange], node: str,
                  ) -> Callable[[cursor], int]:
    key = spec.key
    cast = spec.cast_shape
    first = ranges[0].index * leaves.FANOUT
    lowers = leaf_lowers(ranges)

    def fill(cur: cursor) -> int:
        _hold_storage(cur, spec, node, "ROW EXCLUSIVE")
        if _is_ready(cur, key):
            return 0  # a late copy: the build finished without it, and update owns the leaves
        blocks = objects.obj("blocks", key)
        numbers = [(first + i) * leaves.STRIDE for i in range(len(lowers))]
        cur.execute(sql.SQL("DELETE FROM {} WHERE block_no OPERATOR(pg_catalog.>=) %s AND "
                            "block_no OPERATOR(pg_catalog.<) %s").format(blocks),
                    (numbers[0], numbers[-1] + leaves.STRIDE))
        for kind in ("log", "keys"):  # what the batch's leaves, hashed now, make moot
            params: queries.Params = {}
            span = _key_span(cast, ranges[0].lower, ranges[-1].upper, params, kind == "log")
            cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(objects.obj(kind, key), span),
                        params)
        counts, hashes = leaves.hash_ranges(cur, cast, ranges)
        leaves.insert_blocks(cur, cast, key, numbers, lowers, counts, hashes)
        return sum(counts)

    def run(cur: cursor) -> int:
        attempt = 1
        while True:
            try:
                return in_transaction(fill, repeatable=True)(cur)
            except (psycopg2.errors.SerializationFailure, psycopg2.errors.UniqueViolation):
                # another copy of this batch committed first: redo it at a newer snapshot
                cur.connection.rollback()
                if attempt >= RETRIES:
                    raise
                attempt += 1
    return run


def hash_batch(spec: BuildSpec, ranges: list[KeyRange], sessions: NodeSessions,
               on_range_done: OnRangeDone | None = None) -> dict[str, int]:
    """Hash one batch's leaves on every node (see the module's docstring); rows by node."""
    rows = each_session(sessions, lambda n: _hash_on_node(spec, ranges, n))
    if on_range_done is not None:
        on_range_done(str(ranges[0].index), len(ranges))
    return rows


def _finish_on_node(spec: BuildSpec, shape_sig: str, node: str) -> Callable[[cursor], int]:
    key = spec.key

    def finish(cur: cursor) -> int:
        _hold_storage(cur, spec, node, "SHARE")
        blocks = objects.obj("blocks", key)
        if _is_ready(cur, key):  # a copy of this step committed here already
            cur.execute(sql.SQL("SELECT coalesce(pg_catalog.sum(row_count), 0) FROM {}").format(
                blocks))
            return int(cur.fetchone()[0])
        oid, _ = table_identity(cur, spec.shape)
        name = spec.shape.table.display
        if oid != spec.tables[node] or shape_sig != objects.shape_signature(spec.shape):
            raise TableError(f"Table {name} on node {node} was dropped, created again or "
                             "altered while its Merkle tree was built; run 'ace mtree build' "
                             "for it again.")
        if (objects.tracking_state(cur, oid) != objects.EXPECTED_TRIGGERS
                or _trigger_versions(cur, oid) != spec.triggers[node]):
            raise TableError(f"Change tracking of table {name} on node {node} was dropped, "
                             "disabled or changed while its Merkle tree was built; run "
                             "'ace mtree build' for it again.")
        cur.execute(sql.SQL("SELECT pg_catalog.count(*), coalesce(pg_catalog.sum(row_count), 0) "
                            "FROM {}").format(blocks))
        found, rows = cur.fetchone()
        if int(found) != spec.leaves:
            raise TableError(f"The Merkle tree of table {name} on node {node} has {found} of "
                             f"its {spec.leaves} leaves hashed; the build did not finish. Run "
                             "'ace mtree build' for it again.")
        leaves.rebuild_inner(cur, key, None)
        # the watch's number for the table now: any ALTER TABLE before it that mattered
        # changed the triggers' versions or the shape, both checked above
        cur.execute(sql.SQL(
            "INSERT INTO {} (tree_key, schema_name, table_name, table_oid, "
            "shape_sig, block_rows, bounds_sig, built_at, updated_at, format_version, "
            "altered_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, pg_catalog.now(), "
            "pg_catalog.now(), %s, %s)").format(objects.TREES),
            (key, spec.shape.table.schema, spec.shape.table.table, oid,
             objects.shape_signature(spec.shape), spec.block_rows,
             leaves.bounds_signature(cur, spec.shape, key), objects.FORMAT_VERSION,
             watch.altered_seq(cur, oid)))
        return int(rows)
    return in_transaction(finish)


def finish_build(spec: BuildSpec, sessions: NodeSessions) -> dict[str, Any]:
    """Check every leaf is hashed, build the inner levels and mark the tree ready; the
    build's summary."""
    shape = read_common_shape(sessions, spec.shape.table)
    sig = objects.shape_signature(shape)
    rows = each_session(sessions, lambda n: _finish_on_node(spec, sig, n))
    return {"action": "build", "table": spec.shape.table.display, "nodes": list(spec.nodes),
            "blocks": spec.leaves, "block_rows": spec.block_rows, "rows_by_node": rows}


def build_tree(job: Job, shape: TableShape, task_id: str,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Build in this process: the same steps, the batches one after another (each on
    every node at once)."""
    planned = plan_build(job, shape, task_id, work_dir="")
    done = 0
    for batch in planned.batches:
        hash_batch(planned.spec, batch, job.sessions)
        done += len(batch)
        if progress:
            progress(done, planned.ranges_total)
    return finish_build(planned.spec, job.sessions)
