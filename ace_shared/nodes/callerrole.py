"""Whether a certificate's common name names a role ACE may serve as a caller.

A caller's tasks log in as the role its certificate names (docs/security.md),
so the certificate is worth exactly that role's rights. A role with rights no
row-level check can contain (``SUPERUSER``, ``BYPASSRLS``, ``CREATEROLE``,
``REPLICATION``), a role outside ``ace_callers``, or ACE's own login, must
therefore never be served, whatever the certificate authority signed and
whether or not ``API_ALLOWED_CNS`` is set. The question is asked on every node
of the cluster through ACE's own login (the cluster file's user), read-only,
with a short statement timeout; one node that cannot answer refuses the
caller (fail closed), in a sentence that names the node but not its address.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import psycopg2

from ace_shared.config import Settings
from ace_shared.errors import AceError, CallerUnverifiedError, PermissionDeniedError
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import NodeTarget, connect, node_targets

CALLERS_GROUP = "ace_callers"
FORBIDDEN_ATTRIBUTES = ("SUPERUSER", "BYPASSRLS", "CREATEROLE", "REPLICATION")
CHECK_TIMEOUT_MS = 5000

# Every name schema-qualified; the role is a parameter, never text in the statement.
ROLE_QUERY = """
SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolreplication,
       EXISTS (SELECT 1 FROM pg_catalog.pg_roles g
               WHERE g.rolname OPERATOR(pg_catalog.=) %(group)s
                 AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER'))
FROM pg_catalog.pg_roles r
WHERE r.rolname OPERATOR(pg_catalog.=) %(role)s
"""


@dataclass(frozen=True)
class RoleOnNode:
    """What one node says about the role: None when the role does not exist there."""

    node: str
    attributes: tuple[str, ...] | None
    member: bool


def _ask(target: NodeTarget, role: str) -> RoleOnNode:
    conn = connect(target, readonly=True)
    try:
        with conn.cursor() as cur:
            cur.execute(ROLE_QUERY, {"role": role, "group": CALLERS_GROUP})
            row = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    if row is None:
        return RoleOnNode(target.node, None, False)
    held = tuple(name for name, flag in zip(FORBIDDEN_ATTRIBUTES, row[:4], strict=True) if flag)
    return RoleOnNode(target.node, held, bool(row[4]))


def _ask_or_refuse(target: NodeTarget, role: str, cluster: str) -> RoleOnNode:
    try:
        return _ask(target, role)
    except (AceError, psycopg2.Error) as exc:  # unreachable, login refused, timeout
        raise CallerUnverifiedError(
            f"Role {role} cannot be confirmed as a caller because node {target.node} of "
            f"cluster {cluster} did not answer, so the request is refused; try again when "
            "the node is back.") from exc


def check_caller_role(cluster: Cluster, role: str, settings: Settings,
                      dbname: str | None = None) -> None:
    """Raise unless ``role`` is a plain member of ``ace_callers`` on every node of ``cluster``.

    Raises :class:`PermissionDeniedError` for a role that may not be served and
    :class:`CallerUnverifiedError` when a node cannot answer.
    """
    if any(role == db.user for db in cluster.databases):
        raise PermissionDeniedError(
            f"Role {role} is ACE's own login on cluster {cluster.name}, which no caller may "
            "act as; issue the caller a certificate named after its own role.")
    nodes = tuple(n for n in cluster.nodes if n.is_active) or cluster.nodes
    targets = tuple(replace(t, statement_timeout_ms=CHECK_TIMEOUT_MS,
                            lock_timeout_ms=CHECK_TIMEOUT_MS)
                    for t in node_targets(cluster, nodes, dbname, settings))
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures = [pool.submit(_ask_or_refuse, t, role, cluster.name) for t in targets]
    answers = [f.result() for f in futures]  # the first unreachable node, in cluster order
    for answer in answers:
        if answer.attributes:
            raise PermissionDeniedError(
                f"Role {role} has {', '.join(answer.attributes)} on node {answer.node}, and the "
                "API serves no role with such rights; use a certificate for an ordinary role.")
    for answer in answers:
        if answer.attributes is None or not answer.member:
            raise PermissionDeniedError(
                f"Role {role} is not a member of {CALLERS_GROUP} on node {answer.node}, so the "
                f"API does not serve it; ask the administrator to GRANT {CALLERS_GROUP} to it.")
