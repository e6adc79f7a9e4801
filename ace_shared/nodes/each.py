"""Run a per-node reader that needs the node's name on every node at once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from psycopg2.extensions import cursor

from ace_shared.nodes.sessions import NodeSessions

T = TypeVar("T")


def on_each(sessions: NodeSessions, fn: Callable[[cursor, str], T]) -> dict[str, T]:
    """``fn(cur, node)`` on every node concurrently; results by node, in cluster order.

    Every node is waited for before the first error is raised, so no query is left
    running behind an error.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(sessions.order))) as pool:
        futures = {n: pool.submit(sessions.on_one, n, lambda cur, n=n: fn(cur, n))
                   for n in sessions.order}
    results: dict[str, T] = {}
    first: BaseException | None = None
    for n, fut in futures.items():
        try:
            results[n] = fut.result()
        except BaseException as exc:  # collect, then raise the first in node order
            first = first or exc
    if first is not None:
        raise first
    return results
