#!/usr/bin/env python3
"""Demo tables with known divergence, so that a first ``ace table-diff`` has something to find.

Every node gets the same two tables, filled identically with generate_series (no
randomness, no dependence on the server's time zone: timestamps are written with an
explicit UTC offset). Then a short, explicit list of changes is applied to the
second and third node only. Those lists are the expected answer of a diff, which
makes the demo checkable by eye and by tests.

Tables:

* ``public.customers`` — int key; text, numeric, timestamptz, text[], jsonb and an
  enum column, NULLs and empty arrays.
* ``"Sales"."Order Items"`` — quoted mixed-case names with a space, a composite
  (bigint, int) key, float8 prices and a note that is NULL on some rows and ''
  on others (a repair must keep those apart).

Command use::

    python deploy/demo_data.py --cluster-json cluster/demo/demo.json
    python deploy/demo_data.py --dsn "host=127.0.0.1 port=6432 ..." --dsn "..." --dsn "..."
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

CUSTOMERS = "public.customers"
ORDER_ITEMS = '"Sales"."Order Items"'
ORDER_BASE = 500_000_000_000  # "Order ID" values exceed int4 on purpose

# CASCADE: on a replicating demo the tables are members of a replication set (and may
# carry ACE's Merkle tree triggers); those go with them, and come back after the load.
SCHEMA_SQL = """
DROP TABLE IF EXISTS public.customers CASCADE;
DROP TYPE IF EXISTS public.customer_status;
DROP TABLE IF EXISTS "Sales"."Order Items" CASCADE;
CREATE SCHEMA IF NOT EXISTS "Sales";
CREATE TYPE public.customer_status AS ENUM ('active', 'suspended', 'closed');
CREATE TABLE public.customers (
    id         int PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    balance    numeric(12, 2),
    created_at timestamptz,
    tags       text[],
    prefs      jsonb,
    status     public.customer_status NOT NULL
);
CREATE TABLE "Sales"."Order Items" (
    "Order ID" bigint,
    line       int,
    sku        text NOT NULL,
    qty        int NOT NULL,
    price      float8,
    note       text NULL,
    PRIMARY KEY ("Order ID", line)
);
"""

CUSTOMERS_FILL = """
INSERT INTO public.customers
SELECT i,
       'Customer ' || i,
       'customer' || i || '@example.com',
       ((i * 7919) %% 1000000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '37 minutes 13 seconds',
       CASE WHEN i %% 11 = 0 THEN NULL
            WHEN i %% 13 = 0 THEN '{}'::text[]
            ELSE ARRAY['t' || i %% 5, 't' || i %% 7] END,
       jsonb_build_object('newsletter', i %% 2 = 0,
                          'lang', (ARRAY['en', 'fr', 'de', 'hi'])[1 + i %% 4],
                          'score', i %% 100),
       (CASE WHEN i %% 25 = 0 THEN 'closed'
             WHEN i %% 10 = 0 THEN 'suspended'
             ELSE 'active' END)::public.customer_status
FROM generate_series(1, %(n)s) AS i
"""

# Row g (0-based) is line g % 5 + 1 of order ORDER_BASE + g / 5. ("%%" is psycopg2's "%".)
ORDER_ITEMS_FILL = """
INSERT INTO "Sales"."Order Items"
SELECT %(base)s + g / 5,
       g %% 5 + 1,
       'SKU-' || lpad(((g * 31) %% 9973)::text, 5, '0'),
       1 + g %% 9,
       (g %% 1000) / 7.0::float8,
       CASE WHEN g %% 17 = 0 THEN NULL
            WHEN g %% 19 = 0 THEN ''
            WHEN g %% 101 = 0 THEN 'café ☕ ' || g
            ELSE 'note ' || g END
FROM generate_series(0, %(n)s - 1) AS g
"""


@dataclass(frozen=True)
class Change:
    """One row changed on one node: what a diff must report for it."""

    table: str
    kind: str  # "delete", "update" or "insert"
    key: tuple[int, ...]
    statement: str | sql.Composable
    params: tuple[object, ...] = ()


def _item(g: int) -> tuple[int, int]:
    """Primary key of generated order-item row g."""
    return (ORDER_BASE + g // 5, g % 5 + 1)


def _delete_customer(cid: int) -> Change:
    return Change(CUSTOMERS, "delete", (cid,), "DELETE FROM public.customers WHERE id = %s",
                  (cid,))


def _delete_item(g: int) -> Change:
    return Change(ORDER_ITEMS, "delete", _item(g),
                  'DELETE FROM "Sales"."Order Items" WHERE "Order ID" = %s AND line = %s',
                  _item(g))


def _update_item(g: int, assignment: str, *values: object) -> Change:
    return Change(ORDER_ITEMS, "update", _item(g),
                  sql.SQL('UPDATE "Sales"."Order Items" SET {} '
                          'WHERE "Order ID" = %s AND line = %s').format(sql.SQL(assignment)),
                  (*values, *_item(g)))


def _update_customer(cid: int, assignment: str, *values: object) -> Change:
    return Change(CUSTOMERS, "update", (cid,),
                  sql.SQL("UPDATE public.customers SET {} WHERE id = %s").format(
                      sql.SQL(assignment)), (*values, cid))


def node_changes(customers: int) -> list[list[Change]]:
    """The divergence to inject, per node index: nothing on the first node.

    Keys are disjoint between nodes, so a pair of nodes differs on exactly the
    union of their changed keys (see :func:`expected_pair_diffs`).
    """
    extra = customers + 1
    new_order = ORDER_BASE + 100_000_000
    n2 = [
        _delete_customer(101),
        _delete_customer(202),
        _delete_customer(303),
        _update_customer(404, "email = %s", "c404@changed.example.com"),
        _update_customer(505, "balance = balance + 0.01"),
        _update_customer(606, "tags = %s", ["vip"]),
        _delete_item(10),
        _delete_item(11),
        _update_item(19, "note = NULL"),  # '' on the other nodes
        _update_item(500, "price = price + 0.5"),
    ]
    n3 = [
        Change(CUSTOMERS, "insert", (extra,),
               "INSERT INTO public.customers VALUES (%s, 'Late Signup', 'late@example.com', "
               "0, timestamptz '2025-06-01 12:00:00+00', NULL, '{}', 'active')", (extra,)),
        Change(CUSTOMERS, "insert", (extra + 1,),
               "INSERT INTO public.customers VALUES (%s, 'Zoë Ünicode', NULL, 12.5, NULL, "
               "'{a,b}', '{\"lang\": \"de\"}', 'suspended')", (extra + 1,)),
        _update_customer(707, "status = 'closed', prefs = prefs || '{\"closed_by\": \"ops\"}'"),
        _update_customer(808, "created_at = created_at + interval '1 second'"),
        *[Change(ORDER_ITEMS, "insert", (new_order, line),
                 'INSERT INTO "Sales"."Order Items" VALUES (%s, %s, %s, 1, 9.99, NULL)',
                 (new_order, line, f"SKU-NEW{line}")) for line in (1, 2, 3)],
        _update_item(34, "note = %s", ""),  # NULL on the other nodes
        _update_item(1000, "qty = qty + 1"),
    ]
    return [[], n2, n3]


@dataclass
class NodeSummary:
    """What was done to one node, for printing and for tests."""

    node: str
    rows: dict[str, int] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)

    def counts(self, table: str) -> dict[str, int]:
        kinds = [c.kind for c in self.changes if c.table == table]
        return {kind: kinds.count(kind) for kind in ("delete", "update", "insert")}

    def line(self) -> str:
        parts = []
        for table in (CUSTOMERS, ORDER_ITEMS):
            counts = self.counts(table)
            done = ", ".join(f"{n} {kind.rstrip('e')}ed" for kind, n in counts.items() if n)
            done = done or "unchanged"
            parts.append(f"{table} {self.rows[table]} rows ({done})")
        return f"{self.node}: " + "; ".join(parts)


def load_node(dsn: str, changes: Sequence[Change], customers: int = 20_000,
              order_items: int = 50_000) -> dict[str, int]:
    """Recreate the demo tables on one node, fill them, apply ``changes``; return row counts."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SCHEMA_SQL)
            cur.execute(CUSTOMERS_FILL, {"n": customers})
            cur.execute(ORDER_ITEMS_FILL, {"n": order_items, "base": ORDER_BASE})
            for change in changes:
                cur.execute(change.statement, change.params)
                if cur.rowcount != 1:
                    raise RuntimeError(f"{change.kind} of {change.key} in {change.table} "
                                       f"touched {cur.rowcount} rows, expected 1")
            counts = {}
            for table in (CUSTOMERS, ORDER_ITEMS):
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))
                counts[table] = cur.fetchone()[0]
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}, {}").format(sql.SQL(CUSTOMERS),
                                                         sql.SQL(ORDER_ITEMS)))
        return counts
    finally:
        conn.close()


def load_demo(dsns: Sequence[str], node_names: Sequence[str] | None = None,
              customers: int = 20_000, order_items: int = 50_000) -> list[NodeSummary]:
    """Load the demo tables on every node and inject the divergence; idempotent."""
    if customers < 1000 or order_items < 1005:
        raise ValueError("The injected changes need at least 1000 customers and 1005 items.")
    names = list(node_names) if node_names else [f"n{i + 1}" for i in range(len(dsns))]
    plan = node_changes(customers)
    changes = [plan[i] if i < len(plan) else [] for i in range(len(dsns))]
    if len(names) != len(dsns):
        raise ValueError("Give one node name per DSN.")
    with ThreadPoolExecutor(max_workers=len(dsns)) as pool:
        rows = list(pool.map(load_node, dsns, changes, [customers] * len(dsns),
                             [order_items] * len(dsns)))
    return [NodeSummary(name, r, list(c)) for name, r, c in zip(names, rows, changes, strict=True)]


def expected_pair_diffs(summaries: Sequence[NodeSummary]) -> dict[tuple[str, str, str], int]:
    """Rows a correct diff reports per (node, node, table): changed keys of either node."""
    result = {}
    for a_idx, a in enumerate(summaries):
        for b in summaries[a_idx + 1:]:
            for table in (CUSTOMERS, ORDER_ITEMS):
                keys = {c.key for c in (*a.changes, *b.changes) if c.table == table}
                result[(a.node, b.node, table)] = len(keys)
    return result


def dsns_from_cluster_json(path: Path) -> tuple[list[str], list[str]]:
    """Node DSNs and names from a pgEdge cluster JSON file (first database listed)."""
    doc = json.loads(Path(path).read_text())
    db = doc["pgedge"]["databases"][0]
    dsns, names = [], []
    for node in doc["node_groups"]:
        dsns.append(f"host={node['public_ip']} port={node['port']} dbname={db['db_name']} "
                    f"user={db['db_user']} password={db['db_password']}")
        names.append(node["name"])
    return dsns, names


def grant_demo(dsns: Sequence[str], role: str) -> None:
    """Let ``role`` read and repair the demo tables on every node (an API caller's rights)."""
    from psycopg2 import sql
    for dsn in dsns:
        conn = psycopg2.connect(dsn)
        try:
            with conn, conn.cursor() as cur:
                who = sql.Identifier(role)
                cur.execute(sql.SQL('GRANT USAGE ON SCHEMA public, "Sales" TO {}').format(who))
                cur.execute(sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers, "
                    f"{ORDER_ITEMS} TO {{}}").format(who))
        finally:
            conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load ACE's demo tables with known "
                                     "divergence into every node.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cluster-json", type=Path, help="pgEdge cluster JSON file")
    source.add_argument("--dsn", action="append", help="libpq DSN of a node (repeat)")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--order-items", type=int, default=50_000)
    parser.add_argument("--grant-to", metavar="ROLE",
                        help="also let this role read and repair the demo tables")
    args = parser.parse_args(argv)

    if args.cluster_json:
        dsns, names = dsns_from_cluster_json(args.cluster_json)
    else:
        dsns, names = args.dsn, None
    try:
        summaries = load_demo(dsns, names, args.customers, args.order_items)
        if args.grant_to:
            grant_demo(dsns, args.grant_to)
    except (psycopg2.Error, ValueError, RuntimeError) as exc:
        print(f"demo_data: {exc}".rstrip(), file=sys.stderr)
        return 2
    for summary in summaries:
        print(f"demo_data: {summary.line()}")
    pairs = expected_pair_diffs(summaries)
    print("demo_data: a diff should find "
          + ", ".join(f"{a}/{b} {table} {n}" for (a, b, table), n in pairs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
