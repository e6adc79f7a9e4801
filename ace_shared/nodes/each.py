"""Run a per-node reader that needs the node's name on every node at once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from psycopg2.extensions import cursor

from ace_shared.errors import NodeUnreachableError
from ace_shared.nodes.sessions import NodeSessions

T = TypeVar("T")


def on_each(sessions: NodeSessions, fn: Callable[[cursor, str], T]) -> dict[str, T]:
    """``fn(cur, node)`` on every node concurrently; results by node, in cluster order.

    Every node is waited for before an error is raised, so no query is left
    running behind it. A node that cannot be reached is named first: what the
    other nodes said means little until it is back.
    """
    sessions.reserve()  # every node's permit first, in order, before any connects
    with ThreadPoolExecutor(max_workers=max(1, len(sessions.order))) as pool:
        futures = {n: pool.submit(sessions.on_one, n, lambda cur, n=n: fn(cur, n))
                   for n in sessions.order}
    results: dict[str, T] = {}
    errors: list[BaseException] = []
    for n, fut in futures.items():
        try:
            results[n] = fut.result()
        except BaseException as exc:  # collect, then raise one, in node order
            errors.append(exc)
    if errors:
        raise next((e for e in errors if isinstance(e, NodeUnreachableError)), errors[0])
    return results
