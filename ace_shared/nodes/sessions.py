"""Run one query on every node at once, each node on its own connection.

Every node reads and hashes its own rows; the wall time of a step is the
slowest node's, not the sum. Each node gets its own small thread pool, so a
thread only ever holds a connection to one node, and connections are reused
across ranges (see :class:`~ace_shared.nodes.connection.ConnectionCache`).

No query outlives its job: :meth:`NodeSessions.cancel` asks every node to
cancel what the job's connections are running (called when the CLI is
interrupted or a task is revoked), and :meth:`NodeSessions.close` does so
first whenever a query is still running, instead of waiting for it.

A cancel reaches only the statement a connection runs at that instant, and a
thread may be between two statements or still connecting when it is sent; its
next statement would then wait out a lock or statement timeout. So a cancelled
job stays cancelled: no new statement starts, and the cancel is sent again,
every :data:`RECANCEL_EVERY_S`, for as long as any of the job's statements runs.

A connection kept for reuse may have been closed by its node meanwhile (a
restart, an idle timeout). Sessions that only read (the default) then run the
work again once on a new connection: reading twice changes nothing. Sessions
that may write (``readonly=False``, an mtree job's) never run work twice, since
a connection lost during a commit leaves unknown whether it was committed. For
them the ``DISCARD ALL`` that resets a reused connection before any work
(:func:`~ace_shared.nodes.connection.reset_session`) is the check: a connection
that does not answer it is replaced by a new one before the work begins. (A
``SELECT 1`` after it, as before, cost two more round trips per step and told
nothing more.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.errors import AceError, FilterError, JobCancelledError
from ace_shared.nodes import permits
from ace_shared.nodes.connection import (
    ConnectionCache,
    NodeTarget,
    is_connection_lost,
    node_errors,
    query_error,
)
from ace_shared.nodes.filter import FILTER_MARK

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
Params = Sequence[object] | Mapping[str, object] | None

RECANCEL_EVERY_S = 0.2


class NodeSessions:
    """Concurrent access to the nodes of one job."""

    def __init__(self, targets: tuple[NodeTarget, ...], threads_per_node: int = 1,
                 readonly: bool = True) -> None:
        if permits.installed() is not None:
            # Counted connections (a fleet's worker): one per node per job. A second thread
            # would wait for a permit its siblings hold until the job ends; the fleet gets
            # its parallelism from its processes instead.
            threads_per_node = 1
        self.targets = {t.node: t for t in targets}
        self.order = [t.node for t in targets]
        self._readonly = readonly
        self._cache = ConnectionCache()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._cancelled = threading.Event()
        self._recanceller: threading.Thread | None = None
        self._pools = {
            t.node: ThreadPoolExecutor(max_workers=threads_per_node,
                                       thread_name_prefix=f"ace-{t.node}")
            for t in targets
        }

    @contextmanager
    def _counted(self) -> Iterator[None]:
        """Count a statement (or a connect before one) as running, for cancel and close."""
        with self._busy_lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _run(self, node: str, fn: Callable[[cursor], T]) -> T:
        target = self.targets[node]
        with node_errors(node):
            for attempt in (1, 2):
                with self._counted():
                    conn, reused = self._cache.get_reused(target, readonly=self._readonly)
                    if self._cancelled.is_set():
                        raise JobCancelledError()
                    # whether running ``fn`` again, should this connection turn out lost,
                    # is safe: always for reads; for writes only before ``fn`` has begun
                    repeatable = reused and attempt == 1
                    if not self._readonly:
                        # a reused connection has just answered the DISCARD ALL that reset
                        # it (a lost one was replaced then): nothing more to check, and a
                        # write never runs twice
                        repeatable = False
                    try:
                        with conn.cursor() as cur:
                            result = fn(cur)
                        conn.rollback()
                        return result
                    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                        if not is_connection_lost(exc):
                            conn.rollback()
                            raise _query_error(node, exc) from exc
                        self._cache.discard(target)
                        if repeatable:
                            continue  # the node closed the kept connection (see the docstring)
                        raise
                    except psycopg2.errors.InsufficientPrivilege:
                        conn.rollback()
                        raise
                    except psycopg2.Error as exc:
                        conn.rollback()
                        raise _query_error(node, exc) from exc
        raise AssertionError("unreachable")

    def reserve(self, nodes: list[str] | None = None) -> None:
        """Take the permits to connect to every node (or ``nodes``) this job has no
        connection to yet, all before any connects (:mod:`ace_shared.nodes.permits`)."""
        if self._cancelled.is_set():
            raise JobCancelledError()
        self._cache.reserve([self.targets[n] for n in (nodes or self.order)])

    def on_all(self, fn: Callable[[cursor], T], nodes: list[str] | None = None) -> dict[str, T]:
        """Run ``fn`` on every node (or ``nodes``) concurrently; results by node name."""
        return self.start_all(fn, nodes)()

    def start_all(self, fn: Callable[[cursor], T], nodes: list[str] | None = None,
                  ) -> Callable[[], dict[str, T]]:
        """:meth:`on_all`, begun now and not waited for: calling the answer waits for the
        results by node name (or raises the first error, once every node has finished).

        A caller can work on one step's results while the nodes already run the next.
        """
        return self.start_each(lambda _: fn, nodes)

    def start_each(self, make: Callable[[str], Callable[[cursor], T]],
                   nodes: list[str] | None = None) -> Callable[[], dict[str, T]]:
        """:meth:`start_all` of ``make(node)`` on each node: a step whose statement differs
        from node to node, on the nodes' own threads (no thread of its own per node)."""
        names = nodes or self.order
        self.reserve(names)
        futures = {n: self._pools[n].submit(self._run, n, make(n)) for n in names}

        def results() -> dict[str, T]:
            found: dict[str, T] = {}
            first_error: BaseException | None = None
            for n, fut in futures.items():
                try:
                    found[n] = fut.result()
                except BaseException as exc:  # collect, then raise the first, after all finish
                    first_error = first_error or exc
            if first_error is not None:
                raise first_error
            return found
        return results

    def on_one(self, node: str, fn: Callable[[cursor], T]) -> T:
        self.reserve([node])
        return self._pools[node].submit(self._run, node, fn).result()

    def fetch_all(self, query: sql.Composable | str, params: Params = None, *,
                  nodes: list[str] | None = None, setup: str | None = None) -> dict[str, Rows]:
        """Every row ``query`` answers on every node (or ``nodes``), at once; rows by node.

        ``setup`` runs first, in the same transaction: planner settings that end with
        it, such as :data:`ace_shared.diff.queries.PINNED_PLAN`.
        """
        return self.on_all(fetching(query, params, setup), nodes)

    def fetch_from(self, node: str, query: sql.Composable | str, params: Params = None, *,
                   setup: str | None = None) -> Rows:
        """:meth:`fetch_all` on one node: the rows ``query`` answers there."""
        return self.on_one(node, fetching(query, params, setup))

    def cancel(self) -> None:
        """Cancel every query this job is running on any node, and whatever is queued;
        keep cancelling until none runs (see the module's docstring)."""
        self._cancelled.set()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self._cache.cancel_all()
        if self._recanceller is None:
            self._recanceller = threading.Thread(target=self._keep_cancelling, daemon=True,
                                                 name="ace-recancel")
            self._recanceller.start()

    def _keep_cancelling(self) -> None:
        while True:
            time.sleep(RECANCEL_EVERY_S)
            with self._busy_lock:
                if not self._busy:
                    return
            self._cache.cancel_all()

    def close(self) -> None:
        """Stop: cancel running queries (if any) rather than wait, then close every connection."""
        if self._busy:
            self.cancel()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._cache.close_all()


def fetching(query: sql.Composable | str, params: Params = None,
             setup: str | None = None) -> Callable[[cursor], Rows]:
    """A function that runs ``setup`` (if any), then ``query``, and answers every row.

    Both go to the node as one string, in one round trip: a thread waiting on a node
    also waits for the interpreter's lock each time it comes back, and a busy
    neighbour holds that lock for milliseconds at a time.
    """
    if setup:
        if params is not None and "%" in setup:
            raise ValueError("a setup statement must not hold %: it runs with bound parameters")
        query = sql.Composed([sql.SQL(setup + "; "), query if isinstance(
            query, sql.Composable) else sql.SQL(query)])

    def run(cur: cursor) -> Rows:
        cur.execute(query, params)
        rows: Rows = cur.fetchall()
        return rows
    return run


_FILTER_ERRORS = (psycopg2.errors.SyntaxError, psycopg2.errors.UndefinedColumn,
                  psycopg2.errors.UndefinedFunction, psycopg2.errors.DatatypeMismatch,
                  psycopg2.errors.ReadOnlySqlTransaction,
                  psycopg2.errors.InvalidTextRepresentation)


def _ran_filter(exc: psycopg2.Error) -> bool:
    """Whether the statement that failed runs the user's table filter (it bears its mark)."""
    query = getattr(getattr(exc, "cursor", None), "query", None)
    return isinstance(query, bytes) and FILTER_MARK.encode() in query


def _query_error(node: str, exc: psycopg2.Error) -> AceError:
    error = query_error(node, exc)
    if isinstance(exc, _FILTER_ERRORS) and _ran_filter(exc):
        return FilterError(f"{error.message.rstrip('.')}. Check the table filter.")
    return error
