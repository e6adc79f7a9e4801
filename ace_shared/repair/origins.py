"""Origin-aware repairs: ``--recovery-mode`` (only the failed node's rows) and ``--preserve-origin``.

Both start from the ordinary plan (:func:`plan.plan_from_source`) and narrow or
split it, on each node that takes rows from the source:

* The source's rows are read again, live, with their commit time and origin
  (the same query a diff fetches rows with). A row no longer as the diff file
  has it refuses the repair before anything changes: the diff is stale. So
  origins and times come from the database, never from the diff file, and a
  file cannot make a repair stamp an origin or a time of its choosing.
* Recovery mode keeps an upsert only where the source's row came from the failed
  node, and a delete only where the taker's row did (by the diff file's
  provenance fields); every other row is left alone and counted.
* Preserve-origin groups the upserts by (origin, commit time) and applies each
  group in a transaction of its own, oldest first, stamped with that origin (the
  taker's own subscription from that node) and time
  (:func:`ace_shared.repair.mode.enter_quiet_mode`). Deletes, and rows whose
  origin or time is unknown or is the taker itself, go in one ordinary repair
  transaction first.

The price is atomicity: a node's repair is several transactions, so a failure
part-way leaves the groups before it committed. The error says how many
transactions were committed and that the same command, run again, finishes the
job (rows already repaired are equal to the source and left as they are).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from psycopg2.extensions import cursor

from ace_shared.config import Settings
from ace_shared.diff import queries
from ace_shared.diff.provenance import origin_node
from ace_shared.difffile.file import DiffFile, row_key
from ace_shared.difffile.format import row_meta
from ace_shared.difffile.spool import RowSpool, decode_row, key_text
from ace_shared.errors import AceError, RepairError
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import NodeTarget, connect, node_errors, node_targets
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape, read_shape
from ace_shared.repair.apply import (
    COUNTS,
    UNCHANGED,
    ApplyOptions,
    NodeOutcome,
    apply_repairs,
)
from ace_shared.repair.plan import OP_DELETE, OP_UPSERT, NodeWork
from ace_shared.repair.recovery import cluster_peers
from ace_shared.replication.origins import read_origin_names

FETCH_KEYS = 2000
PLAIN = "plain"  # the group applied as an ordinary repair
SKIP = "skip"  # rows recovery mode leaves alone

Apply = Callable[..., list[NodeOutcome]]


@dataclass
class Group:
    """Rows of one taker applied in one transaction."""

    label: str
    preserved: tuple[str, str] | None  # (origin name on the taker, commit time)
    rows: int = 0


@dataclass
class OriginRepair:
    """What the origin-aware repair needs besides the plan."""

    cluster: Cluster
    dbname: str
    settings: Settings
    role: str | None
    table: TableName
    source: str
    failed: str | None  # recovery mode: the failed node
    preserve: bool


T = TypeVar("T")


def _read(target: NodeTarget, table: TableName, fn: Callable[[cursor, TableShape], T]) -> T:
    with node_errors(target.node):
        conn = connect(target, readonly=True)
        try:
            with conn.cursor() as cur:
                return fn(cur, read_shape(cur, table, target.node))
        finally:
            conn.close()


def _source_meta(job: OriginRepair, target: NodeTarget,
                 keyed: list[tuple[str, tuple[Any, ...], str]],
                 ) -> dict[str, tuple[str | None, str | None]]:
    """Each upsert key's (commit time, origin node) on the source, checked against the file."""
    peers = cluster_peers(job.cluster, job.dbname)

    def fetch(cur: cursor, shape: TableShape) -> dict[str, tuple[str | None, str | None]]:
        names = read_origin_names(cur, peers)
        out: dict[str, tuple[str | None, str | None]] = {}
        stale = 0
        for start in range(0, len(keyed), FETCH_KEYS):
            batch = keyed[start:start + FETCH_KEYS]
            query, params = queries.fetch_rows_in_order(shape, [k for _, k, _ in batch], None)
            cur.execute(query, params)
            meta: tuple[str | None, str | None] = (None, None)
            for ord_, text, commit_ts, roident, roname, same_as_before in cur.fetchall():
                if not same_as_before:  # else the row before's transaction wrote it too
                    meta = (commit_ts, origin_node(target.node, roident, roname, names))
                ktext, _key, row_text = batch[int(ord_) - 1]
                wanted = decode_row(row_text)
                live = json.loads(text) if text is not None else None
                if live is None or any(live.get(c) != v for c, v in wanted.items()):
                    stale += 1
                    continue
                out[ktext] = meta
        if stale:
            raise RepairError(
                f"{stale} of the rows to copy from {target.node} changed there since the diff "
                "was made; run table-diff again and repair from the new file.")
        return out
    return _read(target, job.table, fetch)


def _taker_origins(job: OriginRepair, target: NodeTarget) -> dict[str, str]:
    """Cluster node -> the taker's origin name for it (its subscription from that node)."""
    peers = cluster_peers(job.cluster, job.dbname)
    names = _read(target, job.table, lambda cur, _shape: read_origin_names(cur, peers))
    out: dict[str, str] = {}
    for name, node in sorted(names.items()):
        out.setdefault(node, name)
    return out


def _failed_rows(diff: DiffFile, node: str, key: list[str], failed: str) -> set[str]:
    """Keys of ``node``'s rows in the diff file whose version came from ``failed``."""
    return {key_text(row_key(row, key, "the diff file"))
            for _pair, n, row in diff.iter_rows()
            if n == node and row_meta(row).origin == failed}


def _assign(job: OriginRepair, work: NodeWork, spool: RowSpool, diff: DiffFile,
            target_of: dict[str, NodeTarget]) -> tuple[list[Group], dict[str, int]]:
    """Label each of ``work``'s rows with its group (rows stay in the spool; only labels
    change), and return the groups in the order they are applied."""
    db = spool.db
    key = spool.key
    taker = work.node
    upserts = [(k, tuple(json.loads(k)), r) for k, r in db.execute(
        "SELECT key, row FROM work WHERE node = ? AND op = ? ORDER BY seq", (taker, OP_UPSERT))]
    meta = _source_meta(job, target_of[job.source], upserts) if upserts else {}
    origins = _taker_origins(job, target_of[taker]) if job.preserve else {}
    failed_here = (_failed_rows(diff, taker, key, job.failed)
                   if job.failed and work.counts[OP_DELETE] else set())
    label_of: dict[tuple[str, str, str], str] = {}  # (op, key) -> group label
    groups: dict[str, Group] = {PLAIN: Group(PLAIN, None)}
    skipped = {"recovery_skipped": 0}
    for k, _key, _row in upserts:
        commit_ts, origin = meta[k]
        if job.failed and origin != job.failed:
            label = SKIP
        elif (job.preserve and commit_ts is not None and origin is not None
              and origin != taker and origin in origins):
            label = f"{origin}@{commit_ts}"
            groups.setdefault(label, Group(label, (origins[origin], commit_ts)))
        elif job.preserve and origin is not None and origin != taker and origin not in origins:
            raise RepairError(
                f"Node {taker} has no replication origin for {origin} (no subscription from "
                f"it), so --preserve-origin cannot stamp rows with it; repair without "
                "--preserve-origin or subscribe the node first.")
        else:
            label = PLAIN
        label_of[(OP_UPSERT, k, taker)] = label
    if job.failed:
        for (k,) in db.execute("SELECT key FROM work WHERE node = ? AND op = ?",
                               (taker, OP_DELETE)).fetchall():
            label_of[(OP_DELETE, k, taker)] = PLAIN if k in failed_here else SKIP
    for (op, k, _), label in label_of.items():
        if label == SKIP:
            skipped["recovery_skipped"] += 1
        elif label != PLAIN or op == OP_UPSERT:
            groups.setdefault(label, Group(label, None))
        if label != PLAIN:
            db.execute("UPDATE work SET node = ? WHERE node = ? AND op = ? AND key = ?",
                       (f"{taker}\t{label}", taker, op, k))
    db.commit()
    ordered = [groups[PLAIN]] + sorted((g for g in groups.values() if g.label != PLAIN),
                                       key=lambda g: g.preserved[1] if g.preserved else "")
    for g in ordered:
        name = taker if g.label == PLAIN else f"{taker}\t{g.label}"
        g.rows = int(db.execute("SELECT count(*) FROM work WHERE node = ?", (name,)
                                ).fetchone()[0])
    return [g for g in ordered if g.rows], skipped


def _merge(outcomes: list[NodeOutcome], node: str) -> NodeOutcome:
    merged = NodeOutcome(node)
    for o in outcomes:
        for c in COUNTS:
            merged.counts[c] += o.counts[c]
        for c, keys in o.samples.items():
            merged.samples.setdefault(c, []).extend(keys)
        merged.row_files.update(o.row_files)
    return merged


def apply_by_origin(job: OriginRepair, works: list[NodeWork], spool: RowSpool, diff: DiffFile,
                    opts: ApplyOptions, progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[list[NodeOutcome], list[str]]:
    """Apply each taker's rows group by group (see the module's docstring); outcomes and notes."""
    nodes = {job.source, *(w.node for w in works)}
    target_of = {t.node: t for t in node_targets(
        job.cluster, tuple(job.cluster.node(n) for n in sorted(nodes)), job.dbname,
        job.settings, job.role)}
    outcomes: list[NodeOutcome] = []
    notes: list[str] = []
    for done_nodes, work in enumerate(works):
        groups, skipped = _assign(job, work, spool, diff, target_of)
        if skipped["recovery_skipped"]:
            n = skipped["recovery_skipped"]
            notes.append(f"Recovery mode left {n} {'row' if n == 1 else 'rows'} on {work.node} "
                         f"alone: neither the version there nor {job.source}'s came from "
                         f"{job.failed}.")
        per_group: list[NodeOutcome] = []
        committed = 0
        for group in groups:
            name = work.node if group.label == PLAIN else f"{work.node}\t{group.label}"
            part = NodeWork(name, spool)
            try:
                per_group.extend(apply_repairs(
                    {name: target_of[work.node]}, job.table, [part], diff,
                    replace(opts, preserved=group.preserved)))
            except AceError as exc:
                if committed == 0 and done_nodes == 0:
                    raise  # nothing was committed anywhere: the error says so itself
                # (its "no node was changed" was of this one transaction)
                exc.message = exc.message.replace(UNCHANGED, "").rstrip()
                before = works[:done_nodes]
                repaired = (f" (and node {', '.join(w.node for w in before)} was repaired)"
                            if before else "")
                raise exc.with_note(
                    f"Before this, {committed} of {len(groups)} transactions on {work.node} "
                    f"were committed ({sum(sum(o.counts.values()) for o in per_group)} rows)"
                    f"{repaired}; run the same command again to finish (rows already "
                    "repaired are left as they are).") from exc
            if not opts.dry_run:
                committed += 1
        outcomes.append(_merge(per_group, work.node))
        if job.preserve and not opts.dry_run:
            notes.append(f"Node {work.node} was repaired in {committed} transactions, one per "
                         "origin and commit time (see docs/recovery.md).")
        if progress:
            progress(done_nodes + 1, len(works))
    return outcomes, notes
