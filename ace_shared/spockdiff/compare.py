"""Comparing the replication configuration of every pair of nodes.

Sets are compared by name (flags, then table placement); subscriptions in both
directions: each node of a pair should subscribe to the other, enabled and
replicating, with the same sets and forward origins and apply delay as the
reverse subscription. Each finding is one entry naming the pair.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from ace_shared.replication.model import NodeReplication, Subscription


def _entry(pair: tuple[str, str], kind: str, identity: str, differs: str,
           values: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "identity": identity, "nodes": list(pair), "differs": differs,
            "values": values}


def compare_sets(pair: tuple[str, str], left: NodeReplication,
                 right: NodeReplication) -> list[dict[str, Any]]:
    a, b = pair
    out = []
    names = sorted({s.name for s in left.sets} | {s.name for s in right.sets})
    for name in names:
        x, y = left.set_named(name), right.set_named(name)
        if x is None or y is None:
            missing = a if x is None else b
            holder = b if x is None else a
            out.append(_entry(pair, "replication set", name, f"missing on {missing}",
                              {holder: "present", missing: f"missing on {missing}"}))
            continue
        for flag in sorted(x.flags.keys() | y.flags.keys()):
            if x.flags.get(flag) != y.flags.get(flag):
                out.append(_entry(pair, "replication set", name, flag,
                                  {a: x.flags.get(flag), b: y.flags.get(flag)}))
        for table in sorted(set(x.tables) ^ set(y.tables)):
            missing = b if table in x.tables else a
            holder = a if missing == b else b
            out.append(_entry(pair, "set table", f"{name}: {table}", f"not in set on {missing}",
                              {holder: "in set", missing: "not in set"}))
    return out


def _sub_to(rep: NodeReplication, provider_identity: str) -> Subscription | None:
    return next((s for s in rep.subscriptions if s.provider == provider_identity), None)


def compare_subscriptions(pair: tuple[str, str], left: NodeReplication,
                          right: NodeReplication) -> list[dict[str, Any]]:
    """Both directions of a pair: present, enabled, replicating, and alike."""
    a, b = pair
    out = []
    a_from_b, b_from_a = _sub_to(left, right.identity), _sub_to(right, left.identity)
    ident = f"{a} <-> {b}"
    if a_from_b is None and b_from_a is None:
        return [_entry(pair, "subscription", ident, "no subscription in either direction",
                       {a: f"does not subscribe to {b}", b: f"does not subscribe to {a}"})]
    if a_from_b is None or b_from_a is None:
        lacking, peer = (a, b) if a_from_b is None else (b, a)
        out.append(_entry(pair, "subscription", ident,
                          f"{peer} subscribes to {lacking}, but {lacking} not to {peer}",
                          {lacking: f"does not subscribe to {peer}",
                           peer: f"subscribes to {lacking}"}))
    for node, peer, sub in ((a, b, a_from_b), (b, a, b_from_a)):
        if sub is None:
            continue
        if not sub.enabled:
            out.append(_entry(pair, "subscription", sub.name, "disabled",
                              {node: f"{sub.name} from {peer} is disabled"}))
        elif sub.status != "replicating":
            out.append(_entry(pair, "subscription", sub.name, "down",
                              {node: f"{sub.name} from {peer} is {sub.status}"}))
    if a_from_b is not None and b_from_a is not None:
        for attr in ("sets", "forward_origins", "apply_delay"):
            va, vb = getattr(a_from_b, attr), getattr(b_from_a, attr)
            if (sorted(va) if isinstance(va, tuple) else va) != (
                    sorted(vb) if isinstance(vb, tuple) else vb):
                out.append(_entry(pair, "subscription", ident, attr.replace("_", " "), {
                    a: list(va) if isinstance(va, tuple) else va,
                    b: list(vb) if isinstance(vb, tuple) else vb}))
    return out


def compare_all(found: dict[str, NodeReplication]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for a, b in combinations(list(found), 2):
        out.extend(compare_sets((a, b), found[a], found[b]))
        out.extend(compare_subscriptions((a, b), found[a], found[b]))
    return out
