"""Applying planned repairs: one transaction per node, committed only if all succeed.

Each node's work runs in its own thread, on its own connection, inside one
transaction, logged in as the requesting role itself (never a superuser
session with ``SET ROLE``: the table's triggers, index expressions and domain
checks run in this session): switch replication of the changes off
(:mod:`ace_shared.repair.mode`), check the live table against the diff file,
COPY the rows into a temp table, classify them against the node's rows (what
would be inserted, updated, deleted, kept), then, unless it is a dry run,
refuse a table whose writes would run code a role other than the session user
controls (:mod:`ace_shared.repair.ownercode`) and change the table with one
statement per kind of change.

Only when every node has done all of that are the transactions committed,
one after the other; if any node fails, every node is rolled back, so a
failed repair leaves the whole cluster as it was and the error names the
node. (The one gap: a node that fails at the very moment of COMMIT, after
others committed; the error then says which nodes were repaired.) A dry run
does the same work up to the writes and rolls back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, cursor

from ace_shared.difffile.file import DiffFile, check_diff_shape, row_key
from ace_shared.difffile.format import Row
from ace_shared.difffile.spool import connect as connect_spool
from ace_shared.difffile.spool import decode_row
from ace_shared.errors import (
    AceError,
    DiffFileError,
    JobCancelledError,
    OwnerCodeRefusedError,
    RepairError,
)
from ace_shared.nodes.connection import NodeTarget, connect, node_errors
from ace_shared.nodes.failures import what_failed
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape, read_shape
from ace_shared.repair.mode import (
    QuietState,
    after_transaction,
    detect_spock,
    enter_quiet_mode,
    leave_quiet_mode,
)
from ace_shared.repair.ownercode import lock_for_writes, refuse_owner_code
from ace_shared.repair.plan import OP_DELETE, OP_FILL, OP_UPSERT, NodeWork
from ace_shared.repair.queries import (
    COPY_CHUNK,
    STATE_ABSENT,
    STATE_DIFFERS,
    LineStream,
    RepairSql,
    copy_stage,
    create_stage,
    stage_lines,
)
from ace_shared.tasks.progress import Progress

COUNTS = ("inserted", "updated", "deleted", "kept", "skipped_updates", "filled", "unchanged")
SAMPLE_KEYS = 20
ANALYZE_OVER_ROWS = 1000
CLASSIFY_ROWS = 10_000


@dataclass(frozen=True)
class ApplyOptions:
    dry_run: bool
    insert_only: bool
    deletes_allowed: bool
    fire_triggers: bool
    keep_rows: bool
    # the cluster file's user: code it owns is the operator's, trusted like a superuser's
    ace_login: str | None = None
    # --preserve-origin: (origin name on the node, commit time) stamped on the transaction
    preserved: tuple[str, str] | None = None


class NodeOutcome:
    """What happened (or, in a dry run, would happen) on one node.

    Counts and a few sample keys per category stay in memory; with a report
    asked for, every row goes to a file per category (``row_files``), so the
    report can be written from them however many rows there are.
    """

    def __init__(self, node: str, folder: Path | None = None) -> None:
        self.node = node
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self.samples: dict[str, list[list[str]]] = {}
        self.row_files: dict[str, Path] = {}
        self._folder = folder
        self._open: dict[str, IO[str]] = {}

    def add(self, category: str, row_text: str, key: list[str]) -> None:
        self.counts[category] += 1
        sample = self.samples.setdefault(category, [])
        if len(sample) < SAMPLE_KEYS:
            sample.append(list(row_key(decode_row(row_text), key, "the diff file")))
        if self._folder is not None:
            fh = self._open.get(category)
            if fh is None:
                path = self._folder / f"outcome-{len(self.row_files)}-{id(self):x}.jsonl"
                self.row_files[category] = path
                fh = self._open[category] = open(path, "w", encoding="utf-8")  # noqa: SIM115
            fh.write(row_text)
            fh.write("\n")

    def close_files(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()

    def rows(self, category: str) -> Iterator[Row]:
        """The rows of one category (only when a report was asked for), read back."""
        path = self.row_files.get(category)
        if path is None:
            return
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                yield decode_row(line)


def _category(op: str, state: int, opts: ApplyOptions) -> str:
    if op == OP_UPSERT:
        if state == STATE_ABSENT:
            return "inserted"
        if state == STATE_DIFFERS:
            return "skipped_updates" if opts.insert_only else "updated"
        return "unchanged"
    if op == OP_DELETE:
        if state == STATE_DIFFERS:
            return "deleted" if opts.deletes_allowed else "kept"
        return "unchanged"
    return "filled" if state == STATE_DIFFERS else "unchanged"


def generated_columns(cur: cursor, table: TableName) -> set[str]:
    """Generated columns: computed by the node itself, so never written by a repair."""
    cur.execute("SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                "AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.attgenerated <> ''", (table.schema, table.table))
    return {r[0] for r in cur.fetchall()}


def _detail(exc: psycopg2.Error) -> str:
    """Why a statement failed, by SQLSTATE: the server's text may quote the rows' values."""
    return what_failed(exc)


class NodeRepair:
    """One node's repair, held open in one transaction until told to commit or roll back."""

    def __init__(self, target: NodeTarget, table: TableName, work: NodeWork, diff: DiffFile,
                 opts: ApplyOptions) -> None:
        self.target = target
        self.node = target.node
        self.table = table
        self.work = work
        self.diff = diff
        self.opts = opts
        self.conn: connection | None = None
        self.quiet: QuietState | None = None
        self.cancelled = False

    def prepare(self) -> NodeOutcome:
        """Do everything short of COMMIT; raise an :class:`AceError` naming the node on failure."""
        try:
            with node_errors(self.node):
                # Logged in as the requesting role (or, with no caller, the operator's user).
                self.conn = connect(self.target)
                if self.cancelled:  # interrupted while this node was still connecting
                    raise JobCancelledError()
                spock = detect_spock(self.conn, self.node) if not self.opts.dry_run else False
                with self.conn.cursor() as cur:
                    if not self.opts.dry_run:
                        self.quiet = enter_quiet_mode(cur, spock, self.opts.fire_triggers,
                                                      self.node, self.opts.preserved)
                    outcome = self._work(cur)
                    if self.quiet is not None:
                        leave_quiet_mode(cur, self.quiet)
                return outcome
        except AceError:
            raise
        except psycopg2.Error as exc:
            raise RepairError(f"The repair failed on node {self.node}: {_detail(exc)}.") from exc

    def _columns(self, cur: cursor, shape: TableShape) -> list[Any]:
        generated = generated_columns(cur, self.table)
        columns = [c for c in shape.columns if c.name not in generated]
        missing = sorted({c.name for c in columns} - self.diff.columns_in_every_row())
        if missing and self.work.counts[OP_UPSERT]:
            raise DiffFileError(
                f"The diff file {self.diff.path} has rows without column {missing[0]}, which "
                f"table {self.table.display} on node {self.node} has; run table-diff again.")
        return columns

    def _work(self, cur: cursor) -> NodeOutcome:
        shape = read_shape(cur, self.table, self.node)
        check_diff_shape(self.diff, shape, self.node)
        columns = self._columns(cur, shape)
        statements = RepairSql(shape, columns)
        names = [c.name for c in columns]
        spool = connect_spool(self.work.path)
        try:
            cur.execute(create_stage(len(columns)))
            cur.copy_expert(copy_stage(len(columns)),
                            LineStream(stage_lines(self.work.staged(spool), names)),
                            size=COPY_CHUNK)
            if sum(self.work.counts.values()) > ANALYZE_OVER_ROWS:
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("ace_repair_stage")))
            outcome = self._classify(statements, list(shape.key), spool)
        finally:
            spool.close()
        if self.opts.dry_run:
            return outcome
        deletes = bool(self.work.counts[OP_DELETE] and self.opts.deletes_allowed)
        if not (deletes or self.work.counts[OP_UPSERT] or self.work.counts[OP_FILL]):
            return outcome
        # the columns whose values are cast to their types: every one for an upsert
        written = (names if self.work.counts[OP_UPSERT] else
                   [c.name for c in statements.value_cols] if self.work.counts[OP_FILL] else [])
        trusted = (self.opts.ace_login,) if self.opts.ace_login else ()
        lock_for_writes(cur, self.table)
        refuse_owner_code(cur, self.table, self.node, written, trusted)
        if deletes:
            cur.execute(statements.delete())
            outcome.counts["deleted"] = cur.rowcount
        if self.work.counts[OP_UPSERT]:
            cur.execute(statements.upsert(update=not self.opts.insert_only))
            inserted, updated = cur.fetchone()
            outcome.counts["inserted"], outcome.counts["updated"] = int(inserted), int(updated)
        if self.work.counts[OP_FILL]:
            cur.execute(statements.fill_nulls())
            outcome.counts["filled"] = max(cur.rowcount, 0)
        # again: code added meanwhile (to a partition, a domain) rolls every node back
        refuse_owner_code(cur, self.table, self.node, written, trusted)
        return outcome

    def cancel(self) -> None:
        """Ask the node to cancel the statement this repair is running, if any; no later
        statement of this repair starts once it is connected."""
        self.cancelled = True
        if self.conn is not None and not self.conn.closed:
            with suppress(psycopg2.Error):
                self.conn.cancel()

    def _classify(self, statements: RepairSql, key: list[str],
                  spool: sqlite3.Connection) -> NodeOutcome:
        """Each staged row's state on the node, streamed beside the staged rows themselves."""
        assert self.conn is not None
        folder = self.work.spool.folder if self.opts.keep_rows else None
        outcome = NodeOutcome(self.node, folder=folder)
        try:
            with self.conn.cursor(name="ace_repair_classify") as states:
                states.itersize = CLASSIFY_ROWS
                states.execute(statements.classify())
                for (op, text), (_ord, state) in zip(self.work.staged(spool), states,
                                                      strict=True):
                    outcome.add(_category(op, int(state), self.opts), text, key)
        finally:
            outcome.close_files()
        return outcome

    def commit(self) -> None:
        assert self.conn is not None
        self.conn.commit()

    def rollback(self) -> None:
        if self.conn is not None and not self.conn.closed:
            with suppress(psycopg2.Error):
                self.conn.rollback()

    def close(self) -> None:
        if self.conn is None:
            return
        after_transaction(self.conn, self.quiet)
        with suppress(psycopg2.Error):
            self.conn.close()


UNCHANGED = "No node was changed, so the same command can safely be run again."


def _first_error(errors: dict[str, BaseException], order: list[str]) -> BaseException:
    """The first node's failure, saying which others failed too and that every node was
    rolled back (a failure before any commit changes nothing anywhere)."""
    failed = [n for n in order if n in errors]
    first = errors[failed[0]]
    if not isinstance(first, AceError):
        return first
    if len(failed) > 1:
        first = first.with_note(f"(Node {', '.join(failed[1:])} failed too.)")
    if isinstance(first, OwnerCodeRefusedError):  # says so itself; running it again won't help
        return first
    return first.with_note(UNCHANGED)


RECANCEL_EVERY_S = 0.2


def _cancel_until_done(repairs: list[NodeRepair], futures: list[Future[NodeOutcome]]) -> None:
    """Cancel every node's statement, again and again until every node has stopped.

    A cancel reaches only the statement running at that instant: a node that was
    between two statements, or still connecting, would start its next one and
    wait out a lock or statement timeout.
    """
    while True:
        for r in repairs:
            r.cancel()
        _, running = wait(futures, timeout=RECANCEL_EVERY_S)
        if not running:
            return


def apply_repairs(targets: dict[str, NodeTarget], table: TableName, works: list[NodeWork],
                  diff: DiffFile, opts: ApplyOptions,
                  progress: Progress | None = None,
                  repair_class: type[NodeRepair] | None = None) -> list[NodeOutcome]:
    """Run every node's repair; commit all of them, or none.

    ``repair_class``: a :class:`NodeRepair` that does more in the same transaction
    (a repair plan checks its rows are still the ones it saw).
    """
    make = repair_class or NodeRepair
    repairs = [make(targets[w.node], table, w, diff, opts) for w in works]
    if not repairs:
        return []
    outcomes: dict[str, NodeOutcome] = {}
    errors: dict[str, BaseException] = {}
    done = 0
    futures: dict[str, Future[NodeOutcome]] = {}
    try:
        pool = ThreadPoolExecutor(max_workers=len(repairs), thread_name_prefix="ace-repair")
        try:
            for r in repairs:
                futures[r.node] = pool.submit(r.prepare)
            for node, fut in futures.items():
                try:
                    outcomes[node] = fut.result()
                except Exception as exc:  # gathered; every node is rolled back below
                    errors[node] = exc
                done += 1
                if progress:
                    progress(done, len(repairs))
        except BaseException:  # interrupted (Ctrl-C, a revoked task): stop every node's query
            _cancel_until_done(repairs, list(futures.values()))
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if errors or opts.dry_run:
            for r in repairs:
                r.rollback()
            if errors:
                raise _first_error(errors, [r.node for r in repairs])
            return [outcomes[r.node] for r in repairs]
        committed: list[str] = []
        for r in repairs:
            try:
                r.commit()
            except psycopg2.Error as exc:
                for rest in repairs:
                    rest.rollback()
                raise RepairError(
                    f"The repair failed on node {r.node} while committing: {_detail(exc)}; "
                    f"nodes {', '.join(committed) or 'none'} were already repaired, the others "
                    "are unchanged.") from exc
            committed.append(r.node)
        return [outcomes[r.node] for r in repairs]
    finally:
        for r in repairs:
            r.rollback()
            r.close()
