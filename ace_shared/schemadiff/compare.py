"""Comparing the schema as every node holds it, for every pair of nodes.

One difference is one entry: the object's kind and identity, what differs (an
attribute, or that the object is missing on a node) and the value on each node
of the pair. An object missing on a node is reported once, not again for each
of its columns, constraints, indexes and triggers.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from ace_shared.schemadiff.catalog import CatalogObject

Catalog = dict[str, dict[str, CatalogObject]]

# kinds whose objects live on a relation (table, view or materialized view)
_RELATIONS = ("table", "view")


def _relations(catalog: Catalog) -> set[str]:
    return {name for kind in _RELATIONS for name in catalog.get(kind, {})}


def missing_entry(kind: str, identity: str, pair: tuple[str, str], missing_on: str) -> dict[str, Any]:
    holder = pair[0] if missing_on == pair[1] else pair[1]
    return {"kind": kind, "identity": identity, "nodes": list(pair),
            "differs": f"missing on {missing_on}", "missing_on": missing_on,
            "values": {holder: "present", missing_on: f"missing on {missing_on}"}}


def compare_pair(pair: tuple[str, str], left: Catalog, right: Catalog) -> list[dict[str, Any]]:
    """Every difference between two nodes' catalogs, in kind then identity order."""
    a, b = pair
    rel = {a: _relations(left), b: _relations(right)}
    entries: list[dict[str, Any]] = []
    for kind in list(dict.fromkeys([*left, *right])):
        lo, ro = left.get(kind, {}), right.get(kind, {})
        for identity in sorted(lo.keys() | ro.keys()):
            x, y = lo.get(identity), ro.get(identity)
            if x is None or y is None:
                missing_on = a if x is None else b
                present = y if x is None else x
                assert present is not None  # the identity came from one side or the other
                parent = present.parent
                if parent is not None and parent not in rel[missing_on]:
                    continue  # the relation itself is reported missing
                entries.append(missing_entry(kind, identity, pair, missing_on))
                continue
            for attr in list(dict.fromkeys([*x.attrs, *y.attrs])):
                va, vb = x.attrs.get(attr), y.attrs.get(attr)
                if va != vb:
                    entries.append({"kind": kind, "identity": identity, "nodes": list(pair),
                                    "differs": attr, "values": {a: va, b: vb}})
    return entries


def compare_all(catalogs: dict[str, Catalog | None], schema: str) -> list[dict[str, Any]]:
    """Every pair of nodes, in cluster order; ``None`` is a node without the schema."""
    entries: list[dict[str, Any]] = []
    for a, b in combinations(list(catalogs), 2):
        left, right = catalogs[a], catalogs[b]
        if left is None or right is None:
            if left is not right:
                missing_on = a if left is None else b
                entries.append(missing_entry("schema", schema, (a, b), missing_on))
            continue
        entries.extend(compare_pair((a, b), left, right))
    return entries


def object_counts(catalogs: dict[str, Catalog | None]) -> dict[str, dict[str, int]]:
    """How many objects of each kind each node holds (the report's coverage figures)."""
    return {node: {kind: len(objs) for kind, objs in (cat or {}).items()}
            for node, cat in catalogs.items()}
