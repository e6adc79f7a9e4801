"""Which replication system a node runs, read per node, and its metadata in one shape.

Spock wins over pglogical (a Spock node never has pglogical too), and either wins
over native publications; a node with none of the three gets one sentence.
"""

from __future__ import annotations

from psycopg2.extensions import cursor

from ace_shared.errors import NoReplicationError
from ace_shared.nodes.each import on_each
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.replication.model import NodeReplication
from ace_shared.replication.native import read_native
from ace_shared.replication.pglogical import read_catalog

SYSTEMS = ("spock", "pglogical", "native")

_DETECT = """
SELECT pg_catalog.to_regclass('spock.local_node') IS NOT NULL
    AND pg_catalog.to_regclass('spock.replication_set') IS NOT NULL,
       pg_catalog.to_regclass('pglogical.local_node') IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_catalog.pg_publication) OR EXISTS (
           SELECT 1 FROM pg_catalog.pg_subscription
           WHERE subdbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database
               WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))
"""


def detect_system(cur: cursor) -> str | None:
    cur.execute(_DETECT)
    spock, pglogical, native = cur.fetchone()
    if spock:
        return "spock"
    if pglogical:
        return "pglogical"
    return "native" if native else None


def read_node(cur: cursor, node: str) -> NodeReplication:
    """Detect the node's system and read its replication metadata."""
    system = detect_system(cur)
    if system is None:
        raise NoReplicationError(
            f"Node {node} runs no replication ACE can read (no Spock, pglogical, publication "
            "or subscription in this database); set one up or leave the node out with --nodes.")
    if system == "native":
        return read_native(cur, node)
    found = read_catalog(cur, node, system)
    cur.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (system,))
    row = cur.fetchone()
    return NodeReplication(node=found.node, system=found.system, identity=found.identity,
                           sets=found.sets, subscriptions=found.subscriptions,
                           version=row[0] if row else "")


def read_all(sessions: NodeSessions) -> dict[str, NodeReplication]:
    """Every node's replication metadata, read on all nodes at once; in cluster order."""
    return on_each(sessions, read_node)
