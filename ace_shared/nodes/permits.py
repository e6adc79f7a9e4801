"""Permits to open a connection to a node: how a fleet keeps within a per-node cap.

A node allows a fixed number of connections (``max_connections``), shared
with the applications it serves. Every worker process of every host opens its
own sessions, so left alone a busy fleet would open as many as it has
processes, times the nodes' pairs of readers and writers. The fleet's cap
(``MAX_CONNECTIONS_PER_NODE``) is kept by permits: a connection is opened only
with a permit for its node, and its permit is given back when it closes.

The core only asks; who counts is plugged in. Workers install a
:class:`ConnectionPermits` that counts in Redis across hosts
(:mod:`ace_workers.fleet.connpermits`); a process with none installed (the CLI
in-process, the API) opens connections freely, within its own pool sizes.

A job needs one connection to each of its nodes at once. Two jobs each holding
one node's last permit while waiting for the other's would wait forever, so
:class:`~ace_shared.nodes.sessions.NodeSessions` takes all of its permits up
front, in one order every process follows (:func:`permit_order`), before it
opens any connection.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ace_shared.nodes.connection import NodeTarget


class ConnectionPermits(Protocol):
    """What the core needs of whoever counts connections: take one, give one back."""

    def acquire(self, node: str, address: str) -> str:
        """Block until a connection to ``address`` (node ``node``) may be opened; return a
        token for :meth:`release`. Waits as long as the counter's own limit allows, then
        raises :class:`~ace_shared.errors.ConnectionsBusyError`."""
        ...

    def release(self, address: str, token: str) -> None:
        """Give back the permit ``token`` (a connection to ``address`` was closed)."""
        ...


_lock = threading.Lock()
_installed: ConnectionPermits | None = None


def install(permits: ConnectionPermits | None) -> None:
    """Make ``permits`` the counter of this process's connections (None: no counting)."""
    global _installed
    with _lock:
        _installed = permits


def installed() -> ConnectionPermits | None:
    return _installed


def address_of(target: NodeTarget) -> str:
    """What a permit is counted against: the server, whatever database or role logs in."""
    return f"{target.host}:{target.port}"


def permit_order(targets: Sequence[NodeTarget]) -> list[NodeTarget]:
    """The order every process takes permits in, so no two jobs wait on each other."""
    return sorted(targets, key=lambda t: (address_of(t), t.node))
