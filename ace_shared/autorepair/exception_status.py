"""Setting the status of a Spock replication exception on one node.

Spock records a replicated transaction it could not apply in
``spock.exception_status`` (one row per transaction) and
``spock.exception_status_detail`` (one row per failed command). An operator
who has dealt with one marks it PENDING, RESOLVED or UNRESOLVED, with an
optional JSON note of what was done. The update is addressed by the
transaction's origin, commit time and xid, and optionally one command; it
runs as the caller's role, in one transaction, and changes nothing when no
exception matches.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg2
import psycopg2.errors

from ace_shared.config import Settings
from ace_shared.errors import BadOptionError, ExceptionBusyError, NotFoundError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import connect, node_errors, node_targets

EXCEPTION_STATUSES = ("PENDING", "RESOLVED", "UNRESOLVED")
OID_MAX = 2**32 - 1
XID_MAX = 2**63 - 1
COMMAND_COUNTER_MAX = 2**31 - 1
LOCK_TIMEOUT = "10s"

_SET = """
   SET status = %(status)s,
       resolution_details = COALESCE(%(details)s::jsonb, resolution_details),
       resolved_at = CASE WHEN %(status)s = 'RESOLVED' THEN now() END
 WHERE remote_origin = %(origin)s::oid
   AND remote_commit_ts = %(commit_ts)s
   AND remote_xid = %(xid)s"""
UPDATE_TRANSACTION = "UPDATE spock.exception_status" + _SET
UPDATE_ALL_COMMANDS = "UPDATE spock.exception_status_detail" + _SET
UPDATE_ONE_COMMAND = ("UPDATE spock.exception_status_detail" + _SET
                      + "\n   AND command_counter = %(command_counter)s")


@dataclass(frozen=True)
class ExceptionUpdate:
    """Which exception to update, and how."""

    remote_origin: int
    remote_commit_ts: datetime
    remote_xid: int
    status: str
    command_counter: int | None = None
    resolution_details: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "details": None if self.resolution_details is None
            else json.dumps(self.resolution_details),
            "origin": self.remote_origin,
            "commit_ts": self.remote_commit_ts,
            "xid": self.remote_xid,
            "command_counter": self.command_counter,
        }


def _whole_number(name: str, value: Any, high: int) -> int:
    if isinstance(value, bool):
        value = None
    text = str(value).strip() if isinstance(value, (int, str)) else ""
    if not text.isdigit() or not 0 <= int(text) <= high:
        raise BadOptionError(f"{name} must be a whole number between 0 and {high}, "
                             f"not {value!r}.")
    return int(text)


def _timestamp(name: str, value: Any) -> datetime:
    try:
        if not isinstance(value, str):
            raise ValueError
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadOptionError(f"{name} must be a timestamp such as 2024-03-15T12:34:56.789Z, "
                             f"not {value!r}.") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def parse_exception_update(details: Any) -> ExceptionUpdate:
    """Check ``exception_details`` as the API receives it; one clear error for the first fault."""
    if not isinstance(details, dict):
        raise BadOptionError("exception_details must be a JSON object.")
    for name in ("remote_origin", "remote_commit_ts", "remote_xid", "status"):
        if details.get(name) is None:
            raise BadOptionError(f"exception_details.{name} is required.")
    status = details["status"]
    if not isinstance(status, str) or status.upper() not in EXCEPTION_STATUSES:
        raise BadOptionError(f"exception_details.status must be one of "
                             f"{', '.join(EXCEPTION_STATUSES)}; got {status!r}.")
    counter = details.get("command_counter")
    resolution = details.get("resolution_details")
    if resolution is not None and not isinstance(resolution, dict):
        raise BadOptionError("exception_details.resolution_details must be a JSON object.")
    return ExceptionUpdate(
        remote_origin=_whole_number("exception_details.remote_origin",
                                    details["remote_origin"], OID_MAX),
        remote_commit_ts=_timestamp("exception_details.remote_commit_ts",
                                    details["remote_commit_ts"]),
        remote_xid=_whole_number("exception_details.remote_xid", details["remote_xid"], XID_MAX),
        status=status.upper(),
        command_counter=None if counter is None else _whole_number(
            "exception_details.command_counter", counter, COMMAND_COUNTER_MAX),
        resolution_details=resolution,
    )


def apply_exception_update(conn: psycopg2.extensions.connection, update: ExceptionUpdate,
                           node: str) -> int:
    """Update the matching rows in one transaction; return how many changed.

    Without a command counter the transaction's row and all its command rows
    change; with one, only that command's row. Nothing changes, and
    :class:`NotFoundError` is raised, when no row matches.
    """
    params = update.params()
    with node_errors(node):
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
                changed: int
                if update.command_counter is None:
                    cur.execute(UPDATE_TRANSACTION, params)
                    changed = cur.rowcount
                    cur.execute(UPDATE_ALL_COMMANDS, params)
                    changed += cur.rowcount
                else:
                    cur.execute(UPDATE_ONE_COMMAND, params)
                    changed = cur.rowcount
                if changed == 0:
                    raise NotFoundError(_no_match(update, node))
        except psycopg2.errors.UndefinedTable as exc:
            raise NotFoundError(f"Node {node} has no Spock exception tables "
                                "(spock.exception_status); check that Spock is installed "
                                "in this database.") from exc
        except psycopg2.errors.LockNotAvailable as exc:
            raise ExceptionBusyError(f"The exception rows on node {node} are locked by "
                                     "another session; try again shortly.") from exc
        except psycopg2.DataError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid value"
            raise BadOptionError(f"Node {node} rejected a value of exception_details: "
                                 f"{detail}.") from exc
    return changed


def _no_match(update: ExceptionUpdate, node: str) -> str:
    command = ("" if update.command_counter is None
               else f", command_counter {update.command_counter}")
    return (f"Node {node} has no Spock exception for remote_origin {update.remote_origin}, "
            f"remote_commit_ts {update.remote_commit_ts.isoformat()}, remote_xid "
            f"{update.remote_xid}{command}; check the values in spock.exception_status.")


def update_spock_exception(cluster_name: str, node_name: str, dbname: str | None,
                           details: Any, settings: Settings, role: str | None) -> int:
    """Set an exception's status on one node of a cluster, as ``role``; return rows changed."""
    update = parse_exception_update(details)
    cluster = load_cluster(settings.cluster_dir, cluster_name)
    node = cluster.node(node_name)
    (target,) = node_targets(cluster, (node,), dbname, settings, role)
    with closing(connect(target)) as conn:
        return apply_exception_update(conn, update, node.name)
