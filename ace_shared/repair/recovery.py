"""``table-repair --recovery-mode``: which survivor to repair from, after a node failed.

The failed node's last transactions reached some survivors and not others. The
survivor that received the most of its stream is the one whose replication
origin for the failed node has applied furthest: the highest ``remote_lsn`` in
``pg_replication_origin_status`` (ACE's login needs ``SELECT`` on that view,
docs/security.md). Positions from different subscribers of one provider are
positions in that provider's one WAL, so they compare. Two survivors at the
same position, or one whose position cannot be read, leave no right answer:
the repair is refused in one sentence, asking for ``--source-of-truth``.
"""

from __future__ import annotations

from ace_shared.config import Settings
from ace_shared.errors import RepairError
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import connect, node_errors, node_targets
from ace_shared.replication.origins import Address, origin_progress, read_origin_names


def lsn_value(text: str) -> int:
    """``16/B374D848`` as a number, to compare positions."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def cluster_peers(cluster: Cluster, dbname: str) -> dict[str, Address]:
    return {n.name: (n.host, n.port, dbname) for n in cluster.nodes}


def applied_positions(cluster: Cluster, dbname: str, settings: Settings, role: str | None,
                      nodes: list[str], failed: str) -> dict[str, str | None]:
    """How far each of ``nodes`` applied ``failed``'s stream (LSN text; None: unknown)."""
    peers = cluster_peers(cluster, dbname)
    targets = node_targets(cluster, tuple(cluster.node(n) for n in nodes), dbname, settings,
                           role)
    out: dict[str, str | None] = {}
    for target in targets:
        with node_errors(target.node):
            conn = connect(target, readonly=True)
            try:
                with conn.cursor() as cur:
                    names = read_origin_names(cur, peers)
                    progress = origin_progress(cur)
            finally:
                conn.close()
        lsns = [str(progress[o]) for o, n in names.items() if n == failed and progress.get(o)]
        out[target.node] = max(lsns, key=lsn_value) if lsns else None
    return out


def choose_survivor(positions: dict[str, str | None], failed: str) -> tuple[str, str]:
    """The survivor that applied most of ``failed``'s stream, and a sentence saying why."""
    unknown = [n for n, lsn in positions.items() if lsn is None]
    if unknown:
        raise RepairError(
            f"Recovery mode cannot tell how much of {failed}'s changes node "
            f"{', '.join(unknown)} received (no readable replication origin for {failed}); "
            "name the node to repair from with --source-of-truth.")
    ranked = sorted(positions, key=lambda n: lsn_value(positions[n] or "0/0"), reverse=True)
    best = ranked[0]
    ties = [n for n in ranked[1:] if positions[n] == positions[best]]
    if ties:
        raise RepairError(
            f"Recovery mode found nodes {', '.join([best, *ties])} level at {failed}'s "
            f"position {positions[best]}; name the node to repair from with --source-of-truth.")
    others = ", ".join(f"{n} at {positions[n]}" for n in ranked[1:])
    return best, (f"Recovery mode repaired from {best}: it applied {failed}'s changes up to "
                  f"{positions[best]}, further than {others}.")
