"""Connections to cluster nodes, with every output-affecting session setting pinned.

Two nodes hold the same value only if they print it the same way, so each
connection fixes the settings that change how values print: DateStyle,
TimeZone (so ``timestamptz`` prints in UTC whatever the server's zone),
extra_float_digits (shortest exact floats), bytea_output, IntervalStyle,
lc_monetary and client_encoding. They go in the startup packet, so they cost
no round trip.

Who logs in is the trust boundary (see docs/security.md). A caller's work
logs in *as the caller's role* (ACE's client certificate mapped to the role by
``pg_ident.conf``, or the role's own password from a passfile), never as ACE's
user followed by ``SET ROLE``: any code that runs in a session can take back
its session user, so the session user must be the caller. Only work with no
caller (an operator at the CLI, the operator's scheduled jobs) logs in as the
cluster file's user.

Every session also carries ``search_path = pg_catalog, pg_temp`` (no name in
ACE's SQL resolves to an object a user created; the SQL also names pg_catalog's
functions and operators explicitly), ``row_security = off`` (a table whose
row-level security would hide rows from the role raises an error instead of
silently filtering, and no policy function runs), a statement timeout, a lock timeout,
an idle-in-transaction timeout, and ``client_connection_check_interval`` so a
query whose client died (a killed worker, an interrupted CLI) is cancelled by
the server itself.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TypedDict, cast

import psycopg2
import psycopg2.extensions

from ace_shared.config import Settings
from ace_shared.errors import (
    AceError,
    NodeLoginRefusedError,
    NodeUnreachableError,
    PermissionDeniedError,
)
from ace_shared.nodes import permits
from ace_shared.nodes.cluster import Cluster, Node
from ace_shared.nodes.failures import connect_detail, what_failed

PINNED_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "IntervalStyle": "postgres",
    "lc_monetary": "C",
    "client_encoding": "UTF8",
    # the table-filter guard reads '...' strings by these rules
    "standard_conforming_strings": "on",
    # Nothing a user can create is found by name: a look-alike function or operator in
    # public (or the role's own schema) never wins over pg_catalog's (docs/security.md).
    # pg_temp last, so ACE's own temp tables are found but cannot shadow anything.
    # (regclass, regtype and format_type print names outside pg_catalog qualified.)
    "search_path": "pg_catalog, pg_temp",
    "application_name": "ace",
    # a row-level security policy that applies raises an error instead of filtering rows
    "row_security": "off",
    # the server cancels a running query whose client has gone away
    "client_connection_check_interval": "10s",
}


def startup_options(extra: dict[str, str] | None = None) -> str:
    """Render settings as libpq ``options`` (``-c name=value``), escaping spaces."""
    parts = []
    for name, value in {**PINNED_SETTINGS, **(extra or {})}.items():
        escaped = value.replace("\\", "\\\\").replace(" ", "\\ ")
        parts.append(f"-c {name}={escaped}")
    return " ".join(parts)


@dataclass(frozen=True)
class NodeTarget:
    """Everything needed to open a connection to one node; safe to pickle and log."""

    node: str
    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False, default="")
    role: str | None = None
    sslmode: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslrootcert: str | None = None
    passfile: str | None = None
    sslcertmode: str | None = None
    service: str | None = None  # libpq's service section (ACE's own login only)
    connect_timeout: int = 10
    statement_timeout_ms: int = 0
    lock_timeout_ms: int = 0
    idle_in_transaction_timeout_ms: int = 0

    def dsn_kwargs(self) -> dict[str, object]:
        extra = {}
        for name, value in (("statement_timeout", self.statement_timeout_ms),
                            ("lock_timeout", self.lock_timeout_ms),
                            ("idle_in_transaction_session_timeout",
                             self.idle_in_transaction_timeout_ms)):
            if value:
                extra[name] = str(value)
        # the server's side of the keepalives: a session whose host vanished (a worker
        # powered off) is ended within about a minute, with its locks, not hours later
        extra.update(tcp_keepalives_idle="30", tcp_keepalives_interval="10",
                     tcp_keepalives_count="3")
        kw: dict[str, object] = {
            "host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user,
            "connect_timeout": self.connect_timeout, "options": startup_options(extra),
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if self.password or self.role:  # a caller's empty password stops PGPASSWORD and services
            kw["password"] = self.password
        if self.service and not self.role:  # libpq applies the section (TLS, passfile) itself
            kw["service"] = self.service
        for name in ("sslmode", "sslcert", "sslkey", "sslrootcert", "passfile", "sslcertmode"):
            if getattr(self, name):
                kw[name] = getattr(self, name)
        return kw


# a path no file can ever have (/dev/null is no directory): libpq finds no password there,
# silently (os.devnull itself would make libpq warn that it is not a plain file)
NO_PASSFILE = os.path.join(os.devnull, "ace-no-passfile")


class _Login(TypedDict, total=False):
    """Who a node target logs in as, and with what."""

    user: str
    password: str
    passfile: str | None
    sslcertmode: str | None


class _Cert(TypedDict, total=False):
    """ACE's client certificate and the server's root, when certificates are used."""

    sslmode: str | None
    sslcert: str | None
    sslkey: str | None
    sslrootcert: str | None


def _caller_login(role: str, settings: Settings) -> _Login:
    """A caller's login through the configured routes only, never libpq's defaults.

    libpq would otherwise find a password for the caller in the worker's own
    ``~/.pgpass``, ``PGPASSFILE``, ``PGPASSWORD`` or a service file, and present
    a client certificate from ``~/.postgresql``: whatever the worker's account
    can reach would become the caller's. So the passfile is ``ROLE_PASSFILE``
    or none (a path where no file can be), the password is explicitly empty, and
    without ``USE_CERT_AUTH`` no client certificate is sent.
    """
    login: _Login = {"user": role, "password": "",
                     "passfile": settings.ROLE_PASSFILE or NO_PASSFILE}
    if not settings.USE_CERT_AUTH:
        login["sslcertmode"] = "disable"
    return login


def node_targets(cluster: Cluster, nodes: tuple[Node, ...], dbname: str | None,
                 settings: Settings, role: str | None = None) -> tuple[NodeTarget, ...]:
    """Connection targets for the chosen nodes of a cluster.

    With a caller's ``role`` the login user *is* that role: the cluster file's
    password is never sent for it (the role proves itself with ACE's client
    certificate through a ``pg_ident.conf`` map, or with its own password in
    ``ROLE_PASSFILE``). Without one, the cluster file's user logs in.
    """
    db = cluster.database(dbname)
    cert: _Cert = {}
    if settings.USE_CERT_AUTH:
        root = settings.DB_CA_CERT_FILE or settings.CA_CERT_FILE
        cert = {
            "sslmode": "verify-full" if root else "require",
            "sslcert": settings.ACE_USER_CERT_FILE or None,
            "sslkey": settings.ACE_USER_KEY_FILE or None,
            "sslrootcert": root or None,
        }
    if role and role == db.user:
        raise PermissionDeniedError(
            f"Role {role} is ACE's own login on cluster {cluster.name}; a caller may not act "
            "as it. Issue the caller a certificate named after its own role.")
    login: _Login = _caller_login(role, settings) if role else {"user": db.user,
                                                                "password": db.password}
    statement_ms = (settings.CALLER_STATEMENT_TIMEOUT_MS or settings.STATEMENT_TIMEOUT_MS) \
        if role else settings.STATEMENT_TIMEOUT_MS
    return tuple(
        NodeTarget(node=n.name, host=n.host, port=n.port, dbname=db.name, role=role,
                   service=None if role else n.service,
                   connect_timeout=settings.CONNECT_TIMEOUT,
                   statement_timeout_ms=statement_ms,
                   lock_timeout_ms=settings.LOCK_TIMEOUT_MS,
                   idle_in_transaction_timeout_ms=settings.IDLE_IN_TRANSACTION_TIMEOUT_MS,
                   **login, **cert)
        for n in nodes
    )


_LOGIN_REFUSED = re.compile(
    r"authentication failed|no password supplied|password is required|no pg_hba\.conf entry|"
    r"pg_hba\.conf rejects|role \"[^\"]*\" does not exist|not permitted to log in",
    re.IGNORECASE)


def connect_error(target: NodeTarget, exc: psycopg2.OperationalError) -> NodeUnreachableError:
    """Why a connection failed, told apart: the node refused the login, or is not there.

    libpq reports both as OperationalError; a refused login (SQLSTATE class 28,
    or its message when the server's code does not reach the client) must not
    send the user to check the host and port.
    """
    detail = connect_detail(exc)
    code = getattr(exc, "pgcode", None) or ""
    if code.startswith("28") or _LOGIN_REFUSED.search(str(exc)):
        return NodeLoginRefusedError(target.node, target.user, target.dbname, detail)
    return NodeUnreachableError(target.node, detail)


class PermittedConnection(psycopg2.extensions.connection):  # type: ignore[misc]  # no types
    """A connection that gives its permit back (:mod:`ace_shared.nodes.permits`) when it
    closes, or when it is dropped unclosed (libpq closes it then too)."""

    ace_permit: tuple[permits.ConnectionPermits, str, str] | None = None

    def _give_back(self) -> None:
        held, self.ace_permit = self.ace_permit, None
        if held is not None:
            counter, address, token = held
            with suppress(Exception):  # the counter's own expiry takes it back otherwise
                counter.release(address, token)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._give_back()

    def __del__(self) -> None:
        self._give_back()


def connect(target: NodeTarget, *, readonly: bool = False,
            permit: str | None = None) -> psycopg2.extensions.connection:
    """Open a pinned connection logged in as ``target.user`` (the caller's role, if any).

    Where a permit counter is installed, the connection holds a permit for its
    node: ``permit`` (one taken already, in order, by the caller) or one taken
    here, waiting for it if the node's cap is reached.
    """
    counter = permits.installed()
    address = permits.address_of(target)
    if counter is not None and permit is None:
        permit = counter.acquire(target.node, address)
    try:
        conn = _open(target)
    except BaseException:
        if counter is not None and permit is not None:
            counter.release(address, permit)
        raise
    if counter is not None and permit is not None:
        conn.ace_permit = (counter, address, permit)
    if readonly:
        conn.set_session(readonly=True)
    return conn


def _open(target: NodeTarget) -> PermittedConnection:
    try:
        conn = psycopg2.connect(**target.dsn_kwargs(), connection_factory=PermittedConnection)
    except psycopg2.OperationalError as exc:
        error = connect_error(target, exc)
        if target.role and isinstance(error, NodeLoginRefusedError):
            raise PermissionDeniedError(
                f"ACE cannot log in as role {target.role} on node {target.node}: "
                f"{connect_detail(exc)}. Let ACE's certificate log in as that role "
                "(pg_hba.conf and pg_ident.conf, see docs/security.md).") from exc
        raise error from exc
    return cast(PermittedConnection, conn)


MAX_CONNECTION_AGE_S = 600


def reset_session(conn: psycopg2.extensions.connection) -> bool:
    """Hand a pooled connection on as a new one would be; False if it is lost (closed then).

    A step may leave things in its session that outlive its transaction: a
    session advisory lock, ``SET ROLE``/``SET SESSION AUTHORIZATION``, settings
    (a repair commits), temporary tables, prepared statements, LISTENs. The next
    step, perhaps another caller's, must meet none of them: ``DISCARD ALL``
    drops them all. ACE's pinned settings survive it: they came in the startup
    packet, so they are what ``RESET ALL`` returns to.
    """
    try:
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()
        conn.autocommit = True  # DISCARD ALL cannot run inside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute("DISCARD ALL")
        finally:
            conn.autocommit = False
    except (psycopg2.OperationalError, psycopg2.InterfaceError):
        with suppress(psycopg2.Error):
            conn.close()
        return False
    return True


class ConnectionCache:
    """Reuses one open connection per (thread, node target).

    Celery workers and the in-process pool call the same per-range functions many
    times; reconnecting each time would cost more than hashing a small range.
    A connection handed out again is first rolled back and reset
    (:func:`reset_session`: no transaction, lock, role or setting of the step
    before survives), and one older than :data:`MAX_CONNECTION_AGE_S`
    is closed and replaced, so nothing a session accumulated lives long.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[psycopg2.extensions.connection] = []
        self._opened: dict[int, float] = {}
        # node -> permits taken (address, token), not yet used by a connection
        self._reserved: dict[str, list[tuple[str, str]]] = {}
        self._reserving = threading.Lock()

    def reserve(self, targets: list[NodeTarget] | tuple[NodeTarget, ...]) -> None:
        """Take, in :func:`~ace_shared.nodes.permits.permit_order`, a permit for each of
        ``targets`` this cache has no connection (or permit) for yet.

        Taking them all before connecting, in the order every process follows,
        is what keeps two jobs from each holding what the other waits for.
        Without an installed counter this does nothing.
        """
        counter = permits.installed()
        if counter is None:
            return
        with self._reserving:
            for target in permits.permit_order(targets):
                with self._lock:
                    have = self._reserved.get(target.node) or any(
                        not c.closed and getattr(c, "ace_node", None) == target.node
                        for c in self._all)
                if have:
                    continue
                address = permits.address_of(target)
                token = counter.acquire(target.node, address)
                with self._lock:
                    self._reserved.setdefault(target.node, []).append((address, token))

    def __del__(self) -> None:
        # a cache dropped unclosed: its connections give theirs back as they go; these too
        with suppress(Exception):
            self._release_reserved()

    def _reserved_permit(self, node: str) -> str | None:
        with self._lock:
            held = self._reserved.get(node)
            return held.pop()[1] if held else None

    def _release_reserved(self) -> None:
        counter = permits.installed()
        with self._lock:
            reserved, self._reserved = self._reserved, {}
        if counter is None:
            return
        for held in reserved.values():
            for address, token in held:
                with suppress(Exception):  # else its lease lapses
                    counter.release(address, token)

    def get(self, target: NodeTarget, *, readonly: bool = True) -> psycopg2.extensions.connection:
        return self.get_reused(target, readonly=readonly)[0]

    def get_reused(self, target: NodeTarget, *, readonly: bool = True,
                   ) -> tuple[psycopg2.extensions.connection, bool]:
        """A connection to ``target`` and whether it was reused (it may have gone stale)."""
        conns: dict[tuple[NodeTarget, bool], psycopg2.extensions.connection] = getattr(
            self._local, "conns", None) or {}
        self._local.conns = conns
        conn = conns.get((target, readonly))
        if conn is not None and not conn.closed:
            if time.monotonic() - self._opened.get(id(conn), 0.0) > MAX_CONNECTION_AGE_S:
                with suppress(psycopg2.Error):
                    conn.close()
            elif reset_session(conn):
                return conn, True
        conn = connect(target, readonly=readonly, permit=self._reserved_permit(target.node))
        conn.ace_node = target.node
        conns[(target, readonly)] = conn
        with self._lock:
            self._all = [c for c in self._all if not c.closed]
            self._opened = {id(c): self._opened[id(c)] for c in self._all if id(c) in self._opened}
            self._all.append(conn)
            self._opened[id(conn)] = time.monotonic()
        return conn, False

    def discard(self, target: NodeTarget) -> None:
        conns = getattr(self._local, "conns", {})
        for key in [k for k in conns if k[0] == target]:
            with suppress(psycopg2.Error):
                conns.pop(key).close()

    def cancel_all(self) -> None:
        """Ask every node to cancel whatever this cache's connections are running now."""
        with self._lock:
            opened = list(self._all)
        for conn in opened:
            if not conn.closed:
                with suppress(psycopg2.Error):
                    conn.cancel()

    def close_all(self) -> None:
        """Close every connection this cache opened, from whichever thread, and give back
        the permits it took and has not used."""
        self._release_reserved()
        with self._lock:
            opened, self._all = self._all, []
        for conn in opened:
            with suppress(psycopg2.Error):
                conn.close()


def is_connection_lost(exc: BaseException) -> bool:
    """True for a lost or refused connection, or a server shutting down.

    psycopg2 also files statement timeouts, deadlocks, lock timeouts and a full
    disk under OperationalError; those carry a SQLSTATE and are query errors.
    """
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    code = getattr(exc, "pgcode", None)
    return code is None or code.startswith(("08", "57P"))


def query_error(node: str, exc: psycopg2.Error) -> AceError:
    """One sentence for a failed query on ``node``, from its SQLSTATE (never its text)."""
    reason = what_failed(exc)
    if getattr(exc, "pgcode", None) == "42501":
        return PermissionDeniedError(f"Permission denied on node {node}: {reason}; grant it "
                                     "and run again.")
    return AceError(f"A query failed on node {node}: {reason}.")


@contextmanager
def node_errors(node: str) -> Iterator[None]:
    """Turn a lost connection or a failed query into an error that names the node."""
    try:
        yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        if not is_connection_lost(exc):
            raise query_error(node, exc) from exc
        raise NodeUnreachableError(node, connect_detail(exc)) from exc
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise query_error(node, exc) from exc
