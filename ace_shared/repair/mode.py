"""Keeping a repair from echoing: its changes must not replicate back out.

A repair writes on one node what the other nodes already hold; if those
writes were replicated, they would collide with (or overwrite) the rows on
the other nodes. So, inside the repair's own transaction:

* with Spock, ``spock.repair_mode(true)`` before the writes and
  ``spock.repair_mode(false)`` after them. Spock is detected by looking for
  the function ``spock.repair_mode`` in ``pg_proc`` rather than the extension
  in ``pg_extension``: the function is what is called, so its presence is the
  exact precondition (and a test can provide it without installing Spock);
* without Spock, the session is given a replication origin
  (``pg_replication_origin_session_setup``), so that logical replication
  subscribers that filter by origin (``origin = none``) skip the changes;
  it is reset after the transaction ends. The origin is ``ace_repair``; if
  another repair on the same node is using it right now, a per-backend origin
  (``ace_repair_<pid>``) is used and dropped afterwards.

In both cases ``session_replication_role`` is set to ``replica`` for the
transaction (``SET LOCAL``), so ordinary triggers and foreign-key triggers do
not fire; ``--fire-triggers`` leaves it at ``origin`` so ordinary triggers
fire. Triggers marked ``ENABLE ALWAYS`` fire either way, by PostgreSQL's rules.

All of it runs in the caller's own session, logged in as the caller's role:
never in a superuser session into which the table's triggers, index
expressions or domain checks could reach. Each step is a narrow right the
database administrator grants to the roles that may repair (the group role
``ace_repair`` in docs/security.md): ``SET`` on the parameter
``session_replication_role`` (PostgreSQL 15), ``EXECUTE`` on
``spock.repair_mode(boolean)`` or on the ``pg_replication_origin_*``
functions. A role without them is told which grant is missing.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import psycopg2
from psycopg2.extensions import connection, cursor

from ace_shared.errors import PermissionDeniedError, RepairError

ORIGIN_NAME = "ace_repair"
GRANTS_HINT = "see docs/security.md for the grants a repairing role needs"


@dataclass
class QuietState:
    """What :func:`enter_quiet_mode` switched on, so it can be switched off again."""

    spock: bool
    origin: str | None = None
    drop_origin: bool = False


def has_spock_repair_mode(cur: cursor) -> bool:
    cur.execute("SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'spock' AND p.proname = 'repair_mode'")
    return cur.fetchone() is not None


def _refused(node: str, what: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"The repair on node {node} may not {what}, so its changes would replicate back out "
        f"({GRANTS_HINT}).")


def ensure_origin(conn: connection, node: str = "this node") -> None:
    """Create the shared ``ace_repair`` origin once, in its own short transaction."""
    with conn.cursor() as cur:
        try:
            cur.execute("SELECT pg_catalog.pg_replication_origin_create(%s) "
                        "WHERE pg_catalog.pg_replication_origin_oid(%s) IS NULL",
                        (ORIGIN_NAME, ORIGIN_NAME))
            conn.commit()
        except psycopg2.errors.UniqueViolation:
            conn.rollback()  # another repair created it a moment ago
        except psycopg2.errors.InsufficientPrivilege as exc:
            conn.rollback()
            raise _refused(node, "use replication origins") from exc


def _setup_origin(cur: cursor) -> tuple[str, bool]:
    cur.execute("SAVEPOINT ace_origin")
    try:
        cur.execute("SELECT pg_catalog.pg_replication_origin_session_setup(%s)", (ORIGIN_NAME,))
        cur.execute("RELEASE SAVEPOINT ace_origin")
        return ORIGIN_NAME, False
    except psycopg2.errors.ObjectInUse:
        cur.execute("ROLLBACK TO SAVEPOINT ace_origin")
    cur.execute("SELECT %s || pg_catalog.pg_backend_pid()", (ORIGIN_NAME + "_",))
    name = cur.fetchone()[0]
    cur.execute("SELECT pg_catalog.pg_replication_origin_create(%s) "
                "WHERE pg_catalog.pg_replication_origin_oid(%s) IS NULL", (name, name))
    cur.execute("SELECT pg_catalog.pg_replication_origin_session_setup(%s)", (name,))
    return name, True


def detect_spock(conn: connection, node: str = "this node") -> bool:
    """Before the repair's transaction: is Spock there? If not, make sure the origin exists."""
    with conn.cursor() as cur:
        spock = has_spock_repair_mode(cur)
    conn.commit()
    if not spock:
        ensure_origin(conn, node)
    return spock


def _stamp_origin(cur: cursor, node: str, preserved: tuple[str, str]) -> None:
    """Give the transaction another node's origin and commit time (``--preserve-origin``).

    The origin is one of this node's own subscriptions' (chosen by ACE from the
    replication catalog, never from the diff file), and the time is the source
    row's own commit time. The LSN given is 0/0, so the origin's replication
    progress on this node does not move (docs/recovery.md).
    """
    origin, commit_ts = preserved
    cur.execute("SAVEPOINT ace_stamp")
    try:
        cur.execute("SELECT pg_catalog.pg_replication_origin_session_setup(%s)", (origin,))
    except psycopg2.errors.ObjectInUse as exc:
        cur.execute("ROLLBACK TO SAVEPOINT ace_stamp")
        raise RepairError(
            f"The replication origin {origin} on node {node} is in use by a subscription's "
            "apply worker; disable that subscription (its provider has failed) and run the "
            "repair again.") from exc
    cur.execute("RELEASE SAVEPOINT ace_stamp")
    cur.execute("SELECT pg_catalog.pg_replication_origin_xact_setup("
                "'0/0'::pg_catalog.pg_lsn, %s::pg_catalog.timestamptz)", (commit_ts,))


def enter_quiet_mode(cur: cursor, spock: bool, fire_triggers: bool,
                     node: str = "this node",
                     preserved: tuple[str, str] | None = None) -> QuietState:
    """First thing in the repair's transaction: keep its changes from replicating.

    ``preserved`` (origin name, commit time) stamps the transaction with another
    node's origin instead of ``ace_repair``: subscribers that forward only local
    changes skip it just the same.
    """
    step = "set session_replication_role"
    try:
        if not fire_triggers:
            cur.execute("SET LOCAL session_replication_role = replica")
        if spock:
            step = "call spock.repair_mode"
            cur.execute("SELECT spock.repair_mode(true)")
            if preserved is None:
                return QuietState(spock=True)
        step = "use replication origins"
        if preserved is not None:
            step = "stamp its changes with a replication origin and commit time"
            _stamp_origin(cur, node, preserved)
            return QuietState(spock=spock, origin=preserved[0], drop_origin=False)
        origin, drop = _setup_origin(cur)
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise _refused(node, step) from exc
    return QuietState(spock=False, origin=origin, drop_origin=drop)


def leave_quiet_mode(cur: cursor, state: QuietState) -> None:
    """Inside the transaction, after the writes: Spock's repair mode off again."""
    if state.spock:
        cur.execute("SELECT spock.repair_mode(false)")


def after_transaction(conn: connection, state: QuietState | None) -> None:
    """After commit or rollback: give up the session's origin (and drop a private one)."""
    if state is None or state.origin is None or conn.closed:
        return
    with suppress(psycopg2.Error), conn.cursor() as cur:
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()
        cur.execute("SELECT pg_catalog.pg_replication_origin_session_reset()")
        if state.drop_origin:
            cur.execute("SELECT pg_catalog.pg_replication_origin_drop(%s)", (state.origin,))
        conn.commit()
