"""The fleet's cap on connections per node, counted in Redis across every host.

Each node (host and port) has a sorted set ``ace:conns:<host:port>`` of
permits, one per open connection, each scored with the time its lease ends.
Taking a permit removes the lapsed ones and adds this one only if fewer than
``MAX_CONNECTIONS_PER_NODE`` remain, in one script, so no two processes can
take the last one. A thread in every process renews the leases of the
connections it holds; a process that dies (a host powered off) stops renewing,
its permits lapse within :data:`LEASE_SECONDS`, and the node's slots come back
(the node drops its sessions itself, by keepalive).

A process that must wait says so, as the progress of the job it works for
("waiting for a connection to n2: 10 of 10 in use"), and enters itself in
``ace:conns-wait:<host:port>``. Worker processes keep their sessions between
tasks; one that is idle gives its back as soon as anyone waits for its nodes,
and one about to wait first closes the sessions its own task is not using.
The wait ends: after ``CONNECTION_WAIT_SECONDS`` the job fails with
:class:`~ace_shared.errors.ConnectionsBusyError`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ace_shared.errors import ConnectionsBusyError

LEASE_SECONDS = 30
RENEW_SECONDS = 3.0
POLL_SECONDS = 0.2
NOTE_EVERY_SECONDS = 2.0

log = logging.getLogger(__name__)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Take a permit if fewer than the cap are held (lapsed ones dropped first): -1; else enter
# the waiters and answer how many are held.
_ACQUIRE = _NOW + """
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  redis.call('ZREM', KEYS[2], ARGV[1])
  return -1
end
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[2], lease * 2)
return held
"""

# Extend the leases of permits still held (KEYS: their sets; ARGV: tokens, then the lease);
# a permit Redis lost (a restart) is taken again: its connection is open.
_RENEW = _NOW + """
local lease = tonumber(ARGV[#ARGV])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], lease * 2)
end
return 1
"""

# How many wait for each of these nodes now (KEYS: their waiters' sets).
_WAITING = _NOW + """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZCOUNT', KEYS[i], now, '+inf') end
return out
"""


def permits_key(address: str) -> str:
    return f"ace:conns:{address}"


def waiters_key(address: str) -> str:
    return f"ace:conns-wait:{address}"


def in_use(client: Any, address: str) -> int:
    """Permits held for ``address`` now, lapsed ones not counted."""
    return int(client.zcount(permits_key(address), int(time.time() * 1000), "+inf"))


class FleetPermits:
    """:class:`~ace_shared.nodes.permits.ConnectionPermits` counted in Redis for the fleet.

    ``on_wait`` is told what the process waits for (None once it stops waiting);
    ``release_idle`` closes the sessions this process keeps but its task is not using.
    """

    def __init__(self, client: Callable[[], Any], cap: int, wait_seconds: int,
                 on_wait: Callable[[str | None], None] | None = None,
                 release_idle: Callable[[], None] | None = None,
                 idle: Callable[[], bool] | None = None) -> None:
        self._client, self.cap, self.wait_seconds = client, cap, wait_seconds
        self._on_wait = on_wait or (lambda _note: None)
        self._release_idle = release_idle or (lambda: None)
        self._idle = idle or (lambda: False)
        self._held: dict[str, str] = {}  # token -> address
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._prefix = f"{socket.gethostname()}:{os.getpid()}"

    def acquire(self, node: str, address: str) -> str:
        token = f"{self._prefix}:{uuid.uuid4().hex}"
        started = time.monotonic()
        said_at = 0.0
        gave_back = False
        held = 0
        try:
            while True:
                held = int(self._client().eval(_ACQUIRE, 2, permits_key(address),
                                               waiters_key(address), token, self.cap,
                                               LEASE_SECONDS * 1000))
                if held < 0:
                    with self._lock:
                        self._held[token] = address
                        self._ensure_thread()
                    return token
                if not gave_back:  # our own idle sessions first: they may be what we wait for
                    gave_back = True
                    self._release_idle()
                    continue
                waited = time.monotonic() - started
                if waited >= self.wait_seconds:
                    raise ConnectionsBusyError(node, held, self.cap, self.wait_seconds)
                if time.monotonic() - said_at >= NOTE_EVERY_SECONDS:
                    said_at = time.monotonic()
                    note = f"waiting for a connection to {node}: {held} of {self.cap} in use"
                    log.info("%s (%s)", note, address)
                    self._on_wait(note)
                time.sleep(POLL_SECONDS * (0.5 + random.random()))
        finally:
            if said_at:
                self._client().zrem(waiters_key(address), token)
                self._on_wait(None)

    def release(self, address: str, token: str) -> None:
        with self._lock:
            self._held.pop(token, None)
        self._client().zrem(permits_key(address), token)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._renew_forever, name="ace-conn-permits",
                                        daemon=True)
        self._thread.start()

    def _renew_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(RENEW_SECONDS):
            held = self.held()
            if not held:
                continue
            try:
                self.renew_once(held)
            except Exception as exc:  # Redis away for a moment: renew at the next beat
                log.warning("could not renew this process's connection permits: %s", exc)

    def renew_once(self, held: dict[str, str] | None = None) -> None:
        """Extend every held lease; if this process is idle and anyone waits for a node it
        holds, give its sessions back."""
        held = self.held() if held is None else held
        if not held:
            return
        client = self._client()
        tokens = list(held)
        client.eval(_RENEW, len(tokens), *(permits_key(held[t]) for t in tokens), *tokens,
                    LEASE_SECONDS * 1000)
        addresses = sorted(set(held.values()))
        waiting = client.eval(_WAITING, len(addresses), *(waiters_key(a) for a in addresses))
        if any(int(n) for n in waiting) and self._idle():
            log.info("giving back idle connections: another job waits for them")
            self._release_idle()
