#!/usr/bin/env python3
"""How long ``ace table-repair`` and ``ace table-rerun`` take on 100k divergent rows.

Builds ``bench_repair`` (200k rows by default: bigint key, text, numeric,
timestamptz, text[]) with the same rows on every node, then makes n2 differ
on 100k of them: half deleted, half updated. It then runs the real ``ace``
commands as subprocesses, timing each from spawn to exit and sampling the
peak memory of its process tree:

1. ``table-diff`` (with ``ACE_MAX_ALLOWED_DIFFS`` raised so the diff is whole);
2. ``table-rerun`` in both behaviours on the diff's 100k keys, before repair
   (everything still differs);
3. ``table-repair --source-of-truth n1`` (50k inserts and 50k updates on n2);
4. ``table-rerun`` in both behaviours again (nothing differs any more);
5. ``table-diff`` again, to confirm the nodes match.

Then (``--big-diff-mb``, 200 by default, 0 to skip) the peak memory of
``table-repair --dry-run`` and of ``table-rerun`` on a generated diff file of
that size (see ``big_diff.py``); ``--only-big-diff`` runs that part alone.

Usage::

    .venv/bin/python bench/bench_repair.py                     # cluster demo in ./cluster
    ACE_CLUSTER_DIR=/tmp/acedev/cluster .venv/bin/python bench/bench_repair.py --cluster dev

All SQL text here is built from this module's constants and numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BenchError,
    MeasuredRun,
    check_reachable,
    fmt_mb,
    fmt_s,
    load_targets,
    on_each_node,
    open_connection,
    run_measured,
    venv_tool,
)
from big_diff import run_big_diff
from psycopg2 import sql

from ace_shared.nodes.connection import NodeTarget

TABLE = "bench_repair"
DIVERGED_NODE = "n2"
SOURCE_NODE = "n1"

CREATE = sql.SQL(
    "DROP TABLE IF EXISTS {t}; "
    "CREATE TABLE {t} (id bigint PRIMARY KEY, payload text, amount numeric(12,2), "
    "ts timestamptz, tags text[]); "
    "INSERT INTO {t} SELECT g, md5(g::text) || ' row ' || g, (g %% 100000) / 100.0, "
    "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', "
    "ARRAY['t' || (g %% 7), NULL, 'quote\"' || g] FROM generate_series(1, %s) g; "
    "ANALYZE {t}").format(t=sql.Identifier("public", TABLE))
# n2 loses every 4th row and has the next one changed: rows/4 + rows/4 divergent keys.
DIVERGE = [sql.SQL(text).format(t=sql.Identifier("public", TABLE)) for text in (
    "DELETE FROM {t} WHERE id % 4 = 0",
    "UPDATE {t} SET payload = 'changed ' || id, amount = amount + 1 WHERE id % 4 = 1",
    "VACUUM ANALYZE {t}")]


def build(targets: tuple[NodeTarget, ...], rows: int) -> float:
    t0 = time.perf_counter()

    def create(target: NodeTarget) -> None:
        conn = open_connection(target)
        try:
            with conn.cursor() as cur:
                cur.execute(CREATE, (rows,))
                if target.node == DIVERGED_NODE:
                    for statement in DIVERGE:
                        cur.execute(statement)
        finally:
            conn.close()
    on_each_node(targets, create)
    return time.perf_counter() - t0


def ace_run(env: dict[str, str], *args: str) -> MeasuredRun:
    run = run_measured([venv_tool("ace"), *args], env)
    if run.returncode not in (0, 1):
        raise BenchError(f"ace {' '.join(args)} failed ({run.returncode}):\n{run.stderr}")
    return run


def written(run: MeasuredRun, label: str = "Diffs") -> str:
    found = re.search(re.escape(label) + r" written to (\S+\.json)", run.stdout)
    if not found:
        raise BenchError(f"no file named in the output:\n{run.stdout}")
    return found.group(1)


def line(label: str, run: MeasuredRun, note: str) -> None:
    print(f"{label:<34} {fmt_s(run.wall):>9}   peak {fmt_mb(run.peak_tree_kb):>7}   {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default="demo")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows per node; n2 differs on half of them")
    parser.add_argument("--big-diff-mb", type=int, default=200,
                        help="size of the generated diff file to repair and rerun (0: skip)")
    parser.add_argument("--only-big-diff", action="store_true")
    args = parser.parse_args(argv)
    cluster_dir = Path(os.environ.get("ACE_CLUSTER_DIR", "cluster")).resolve()
    targets = load_targets(cluster_dir, args.cluster)
    check_reachable(targets, cluster_dir, args.cluster)
    if DIVERGED_NODE not in {t.node for t in targets}:
        raise BenchError(f"Cluster {args.cluster} has no node {DIVERGED_NODE}.")
    output = Path(os.environ.get("ACE_OUTPUT_DIR") or tempfile.mkdtemp(prefix="bench-repair-"))
    env = {**os.environ, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(output),
           "ACE_MAX_ALLOWED_DIFFS": str(max(args.rows, 10_000) * 2), "ACE_NO_PROGRESS": "1"}
    env.pop("ACE_BROKER_URL", None)

    if not args.only_big_diff:
        flow(targets, args, env)
    if args.big_diff_mb > 0:
        run_big_diff(targets, args.cluster, env, output, args.big_diff_mb)
    print(f"output folder: {output}")
    return 0


def flow(targets: tuple[NodeTarget, ...], args: argparse.Namespace,
         env: dict[str, str]) -> None:
    """Diff, rerun, repair, rerun, diff on ``bench_repair``."""
    seconds = build(targets, args.rows)
    divergent = args.rows // 4 * 2
    print(f"built {TABLE}: {args.rows} rows on {len(targets)} nodes, {DIVERGED_NODE} differs on "
          f"{divergent} ({fmt_s(seconds)})")
    table = f"public.{TABLE}"

    diff = ace_run(env, "table-diff", args.cluster, table)
    diff_file = written(diff)
    line("table-diff", diff, f"exit {diff.returncode}")
    for behavior in ("multiprocessing", "hostdb"):
        run = ace_run(env, "table-rerun", args.cluster, table, f"--diff-file={diff_file}",
                      f"--behavior={behavior}")
        line(f"table-rerun {behavior} (before)", run, _outcome(run))
    repair = ace_run(env, "table-repair", args.cluster, table, f"--diff-file={diff_file}",
                     f"--source-of-truth={SOURCE_NODE}")
    line("table-repair", repair, repair.stdout.strip().splitlines()[0])
    for behavior in ("multiprocessing", "hostdb"):
        run = ace_run(env, "table-rerun", args.cluster, table, f"--diff-file={diff_file}",
                      f"--behavior={behavior}")
        line(f"table-rerun {behavior} (after)", run, _outcome(run))
    final = ace_run(env, "table-diff", args.cluster, table)
    line("table-diff (after repair)", final, f"exit {final.returncode}")


def _outcome(run: MeasuredRun) -> str:
    found = re.search(r"Of \d+ rows that differed: .*", run.stdout)
    return found.group(0) if found else f"exit {run.returncode}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_repair: {exc}", file=sys.stderr)
        sys.exit(2)
