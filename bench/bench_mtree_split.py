"""What an ``ace mtree update`` costs when it splits an early leaf, against one that splits none.

    .venv/bin/python bench/bench_mtree_split.py [--rows 2000000] [--rounds 3] [--no-load]

Loads the matrix bench's narrow table (``bench_matrix``, ``--rows`` rows) on every
node of a running cluster and builds its tree, then alternates two updates,
``--rounds`` times each, timed as whole commands:

- *no split*: 100 scattered rows changed on the second node;
- *early split*: 300 new keys below every other key inserted on every node, so
  the very first leaf grows past twice its size and is split.

Before leaves kept free numbers between them, the split renumbered every later
leaf and recomputed their inner nodes: linear in the leaves. Figures are for
people, not a test; quote ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchError, check_reachable, load_targets, on_each_node  # noqa: E402
from _common import open_connection as open_node  # noqa: E402
from bench_mtree import ace  # noqa: E402
from bench_mtree_matrix import TABLE, load  # noqa: E402


def run_sql(target: object, statement: str) -> None:
    conn = open_node(target)  # type: ignore[arg-type]
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="demo")
    p.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"))
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-load", action="store_true",
                   help="use the table as the matrix bench left it (--rows must be its rows)")
    args = p.parse_args()
    cluster_dir = Path(args.cluster_dir).resolve()
    targets = load_targets(cluster_dir, args.cluster)
    check_reachable(targets, cluster_dir, args.cluster)
    out = Path(tempfile.mkdtemp(prefix="bench-mtree-split-"))
    env = {**os.environ, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(out),
           "ACE_NO_PROGRESS": "1"}
    env.pop("ACE_BROKER_URL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as an installed ace is
    table = f"public.{TABLE}"
    ace(env, "mtree", "init", args.cluster, "--quiet")
    if not args.no_load:
        load(list(targets), "narrow", args.rows)
    ace(env, "mtree", "teardown", args.cluster, table, "--quiet")
    built_s, _ = ace(env, "mtree", "build", args.cluster, table, "--quiet")
    print(f"{args.rows:,} rows, {len(targets)} nodes; build {built_s:.2f} s", flush=True)
    times: dict[str, list[float]] = {"no split": [], "early split": []}
    for r in range(args.rounds):
        step = args.rows // 100
        run_sql(targets[1], f"UPDATE {TABLE} SET b = 'r{r}' "  # noqa: S608
                f"WHERE id % {step} = 3 AND id <= {step * 100}")
        wall, outp = ace(env, "mtree", "update", args.cluster, table, "--json")
        summary = json.loads(outp)
        times["no split"].append(wall)
        print(f"no split:    {wall:.2f} s  (split {summary['leaves_split']})", flush=True)
        low = -(r + 1) * 300
        on_each_node(list(targets), lambda t, low=low: run_sql(  # type: ignore[misc]
            t, f"INSERT INTO {TABLE} SELECT g, 0, 'new' "  # noqa: S608
            f"FROM generate_series({low}, {low + 299}) g"))
        wall, outp = ace(env, "mtree", "update", args.cluster, table, "--json")
        summary = json.loads(outp)
        times["early split"].append(wall)
        print(f"early split: {wall:.2f} s  (split {summary['leaves_split']})", flush=True)
    for what, walls in times.items():
        print(f"median {what}: {statistics.median(walls):.2f} s")
    ace(env, "mtree", "teardown", args.cluster, table, "--quiet")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_mtree_split: {exc}", file=sys.stderr)
        sys.exit(2)
