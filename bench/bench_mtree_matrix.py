"""A Merkle tree's re-check against a full table-diff, on tables unlike bench_mtree's.

    .venv/bin/python bench/bench_mtree_matrix.py                      # 1M rows, every cell
    .venv/bin/python bench/bench_mtree_matrix.py --rows 1000000,10000000 --shapes wide

For each row count and table shape, ``bench_matrix`` is loaded on every node of
a running cluster (the same rows everywhere) and its tree built. Then, for each
pattern of change and each node count, rows are changed on the second node
(``--changes``: ``N`` rows scattered over the key space, ``Nc`` N consecutive
keys), and ``ace mtree table-diff`` (which folds the change log in first) and
``ace table-diff`` are timed as whole commands on the same nodes, one after the
other; both must report the same rows. The changed rows are put back before the
next cell, so each cell's diff finds only its own changes.

Shapes: ``narrow`` is ``id bigint`` plus an int and a text (three columns);
``wide`` is seven columns, ``id bigint``, two texts, a numeric, a timestamptz,
a text[] and a jsonb whose every tenth value is stored out of line (TOAST).

Target: the re-check at most 10% of the full diff in every cell, and at most
5% at 10M rows with 0.01% of the rows changed. Figures are for people, not a
test; quote ratios measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchError, check_reachable, load_targets, on_each_node  # noqa: E402
from _common import open_connection as open_node  # noqa: E402
from bench_mtree import ace, diff_rows  # noqa: E402

TABLE = "bench_matrix"
SHAPES = {
    "narrow": (
        "id bigint PRIMARY KEY, a int, b text",
        "g, g % 1000, md5(g::text)",
    ),
    "wide": (
        "id bigint PRIMARY KEY, b text, label text, amount numeric(12,2), at timestamptz, "
        "tags text[], payload jsonb",
        "g, md5(g::text), 'label ' || g, g / 100.0, "
        "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', "
        "ARRAY['t' || g % 7, 't' || g % 11], "
        # every tenth payload is ~3 KB of poorly compressible text: stored out of line
        "jsonb_build_object('g', g, 'blob', CASE WHEN g % 10 = 0 THEN "
        "(SELECT string_agg(md5((g * k)::text), '') FROM generate_series(1, 96) k) "
        "ELSE md5(g::text) END)",
    ),
}
TARGET, TARGET_AT_SCALE = 0.10, 0.05


@dataclass(frozen=True)
class Change:
    """``count`` rows changed on the second node: scattered over the keys, or consecutive."""

    count: int
    clustered: bool

    @classmethod
    def parse(cls, text: str) -> Change:
        clustered = text.endswith("c")
        return cls(int(text.rstrip("c")), clustered)

    @property
    def label(self) -> str:
        return f"{self.count} {'clustered' if self.clustered else 'scattered'}"

    def where(self, rows: int) -> tuple[str, tuple[int, ...]]:
        """A condition on ``id`` picking this change's rows of a table of ``rows`` rows."""
        if self.clustered:
            start = rows // 3
            return "id >= %s AND id < %s", (start, start + self.count)
        step = max(1, rows // self.count)
        return "id %% %s = 7 AND id <= %s", (step, step * self.count)


def load(targets: list[object], shape: str, rows: int) -> None:
    columns, values = SHAPES[shape]

    def on_node(target: object) -> None:
        conn = open_node(target)  # type: ignore[arg-type]
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(f"CREATE TABLE {TABLE} ({columns})")
            cur.execute(f"INSERT INTO {TABLE} SELECT {values.replace('%', '%%')} "  # noqa: S608
                        "FROM generate_series(1, %s) g", (rows,))
            cur.execute(f"VACUUM ANALYZE {TABLE}")
        conn.close()
    on_each_node(targets, on_node)


def change(target: object, change: Change, rows: int, value: str | None) -> int:
    """Set ``b`` of the change's rows to ``value``, or back to what every node has."""
    where, params = change.where(rows)
    new = "%s" if value is not None else "md5(id::text)"
    conn = open_node(target)  # type: ignore[arg-type]
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {TABLE} SET b = {new} WHERE {where}",  # noqa: S608
                    ((value,) if value is not None else ()) + params)
        count = cur.rowcount
    conn.close()
    return count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="demo")
    p.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"))
    p.add_argument("--rows", default="1000000", help="row counts, comma-separated")
    p.add_argument("--shapes", default="narrow,wide")
    p.add_argument("--changes", default="1,100,10000,10000c",
                   help="rows changed per cell; a trailing c: consecutive keys")
    p.add_argument("--nodes", default="2,3", help="node counts (the first N nodes)")
    args = p.parse_args()
    cluster_dir = Path(args.cluster_dir).resolve()
    targets = load_targets(cluster_dir, args.cluster)
    check_reachable(targets, cluster_dir, args.cluster)
    node_counts = [int(n) for n in args.nodes.split(",")]
    if max(node_counts) > len(targets) or min(node_counts) < 2:
        raise BenchError(f"--nodes must be between 2 and {len(targets)}, the cluster's nodes.")
    changes = [Change.parse(c) for c in args.changes.split(",")]
    out = Path(tempfile.mkdtemp(prefix="bench-mtree-matrix-"))
    env = {**os.environ, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(out),
           "ACE_NO_PROGRESS": "1", "ACE_MAX_ALLOWED_DIFFS": "10000000"}
    env.pop("ACE_BROKER_URL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as an installed ace is
    ace(env, "mtree", "init", args.cluster, "--quiet")
    print("| rows | shape | changed | nodes | full table-diff | mtree table-diff | ratio | "
          "target |\n|---|---|---|---|---|---|---|---|", flush=True)
    missed = 0
    same = True
    for rows in (int(r) for r in args.rows.split(",")):
        for shape in args.shapes.split(","):
            load(targets, shape, rows)
            ace(env, "mtree", "teardown", args.cluster, f"public.{TABLE}", "--quiet")
            ace(env, "mtree", "build", args.cluster, f"public.{TABLE}", "--quiet")
            for cell, what in enumerate(changes):
                for count in node_counts:
                    nodes = ",".join(t.node for t in targets[:count])  # type: ignore[attr-defined]
                    changed = change(targets[1], what, rows, f"changed {cell} {count}")
                    tree_s, tree_out = ace(env, "mtree", "table-diff", args.cluster,
                                           f"public.{TABLE}", f"--nodes={nodes}")
                    full_s, full_out = ace(env, "table-diff", args.cluster, f"public.{TABLE}",
                                           f"--nodes={nodes}")
                    same = same and diff_rows(tree_out) == diff_rows(full_out)
                    target = TARGET_AT_SCALE if rows >= 10_000_000 and \
                        changed <= rows // 10_000 else TARGET
                    ratio = tree_s / full_s
                    missed += ratio > target
                    print(f"| {rows:,} | {shape} | {what.label} ({changed}) | {count} | "
                          f"{full_s:.2f} s | {tree_s:.2f} s | {ratio:.3f} | "
                          f"{'ok' if ratio <= target else 'MISSED'} <= {target} |", flush=True)
                    change(targets[1], what, rows, None)
            # the put-back rows go through the log too: fold them before the next shape
            ace(env, "mtree", "update", args.cluster, f"public.{TABLE}", "--quiet")
    ace(env, "mtree", "teardown", args.cluster, f"public.{TABLE}", "--quiet")
    print(f"\ncells over target: {missed}; same rows reported by both: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_mtree_matrix: {exc}", file=sys.stderr)
        sys.exit(2)
