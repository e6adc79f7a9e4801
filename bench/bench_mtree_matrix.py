"""A Merkle tree's re-check against a full table-diff, on tables unlike bench_mtree's.

    .venv/bin/python bench/bench_mtree_matrix.py                      # 1M rows, every cell
    .venv/bin/python bench/bench_mtree_matrix.py --rows 1000000,10000000 --shapes wide
    .venv/bin/python bench/bench_mtree_matrix.py --warm --repeat 3       # and in one process

For each row count and table shape, ``bench_matrix`` is loaded on every node of
a running cluster (the same rows everywhere) and its tree built. Then, for each
pattern of change and each node count, rows are changed on the second node
(``--changes``: ``N`` rows scattered over the key space, ``Nc`` N consecutive
keys), and ``ace mtree table-diff`` (which folds the change log in first) and
``ace table-diff`` are timed as whole commands on the same nodes, one after the
other; both must report the same rows. The changed rows are put back before the
next cell, so each cell's diff finds only its own changes. After each build, one
untimed re-check of every node marks the leaves agreed, as the first run of a
schedule would (from then on a differing leaf is read by the keys changed since it
agreed, see docs/mtree.md; the first re-check after a build reads differing leaves
whole). Before every re-check the
changed rows are set to a new value, so every re-check has the same log to fold.

``--warm`` also times both in this one long-lived process, as a scheduled re-check
runs in a warm worker where no interpreter starts: the CLI's own code reads the
same arguments into the same options and requests, and the core entry points the
CLI calls run here (``run_mtree_diff`` and ``run_table_diff``; only that call is
timed). The first call in the process pays imports and caches, so one untimed
call of each runs before any is timed. Each side keeps its sessions to the nodes
between calls, as a worker keeps its own (a worker plans a re-check and a
table-diff on them), and neither uses the other's; the tree lock's connections are
a re-check's own every time, as in a worker. ``--warm-only`` skips the
commands. ``--repeat N`` times each N times and reports the medians.

Shapes: ``narrow`` is ``id bigint`` plus an int and a text (three columns);
``wide`` is seven columns, ``id bigint``, two texts, a numeric, a timestamptz,
a text[] and a jsonb whose every tenth value is stored out of line (TOAST).

Target: the re-check at most 10% of the full diff in every cell, and at most
5% at 10M rows with 0.01% of the rows changed. Figures are for people, not a
test; quote ratios measured in one run. With ``--warm`` the target is judged on the
warm ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

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


def change_again(target: object, change_: Change, rows: int, value: str,
                 counter: Iterator[int]) -> int:
    """Set the change's rows to a value they never had: the same log to fold every time."""
    return change(target, change_, rows, f"{value} {next(counter)}")


def cli_diff(env: dict[str, str], words: list[str]) -> tuple[float, int]:
    seconds, stdout = ace(env, *words)
    return seconds, diff_rows(stdout)


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


class Warm:
    """The two diffs of ``ace mtree table-diff`` and ``ace table-diff`` run in this process."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.clear()
        os.environ.update(env)  # the settings the commands would read
        self._sessions: dict[tuple[Any, ...], Any] = {}

    def sessions(self, request: Any, settings: Any, readonly: bool) -> Any:
        """This process's sessions to the request's nodes, kept between calls as a worker
        keeps its own (``ace_workers.fleet.runtime``): one set for each side."""
        from ace_shared.diff.local import pool_size
        from ace_shared.diff.plan import resolve_targets
        from ace_shared.nodes.sessions import NodeSessions
        _, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                     settings, request.role)
        key = (targets, readonly)
        if key not in self._sessions:
            self._sessions[key] = NodeSessions(
                targets, threads_per_node=pool_size(request.max_cpu_ratio), readonly=readonly)
        return self._sessions[key]

    @staticmethod
    def _values(command: Any, words: list[str]) -> tuple[dict[str, Any], Any]:
        """The options and settings the CLI hands ``command``'s run for ``words``."""
        from ace_api.cli.options import build_command
        got: list[tuple[dict[str, Any], Any]] = []

        def keep(values: dict[str, Any], settings: Any) -> int:
            got.append((values, settings))
            return 0
        with contextlib.suppress(SystemExit):
            build_command(command, keep).main(words, standalone_mode=False)
        if not got:
            raise BenchError(f"the CLI did not accept {' '.join(words)}.")
        return got[0]

    def tree(self, words: list[str]) -> tuple[float, int]:
        from ace_shared.mtree.diffjob import run_mtree_diff
        from ace_shared.mtree.request import MTREE_COMMANDS, validate_mtree_request
        from ace_shared.tasks.ids import new_task_id
        values, settings = self._values(MTREE_COMMANDS["table-diff"], words)
        request = validate_mtree_request({**values, "action": "table-diff"}, settings, "cli")
        sessions = self.sessions(request, settings, readonly=False)
        started = time.monotonic()
        _, summary = run_mtree_diff(request, settings, new_task_id("mtree"), sessions=sessions)
        return time.monotonic() - started, summary.diff_rows

    def full(self, words: list[str]) -> tuple[float, int]:
        from ace_shared.diff.local import run_table_diff
        from ace_shared.diff.request import TABLE_DIFF, validate_diff_request
        from ace_shared.tasks.ids import new_task_id
        values, settings = self._values(TABLE_DIFF, words)
        request = validate_diff_request(values, settings, "cli")
        sessions = self.sessions(request, settings, readonly=True)
        started = time.monotonic()
        _, summary = run_table_diff(request, settings, new_task_id("table-diff"),
                                    sessions=sessions)
        return time.monotonic() - started, summary.diff_rows


Run = Callable[[], tuple[float, int]]


def timed(fresh: Callable[[], int], tree: Run, full: Run,
          repeat: int) -> tuple[float, float, bool, int]:
    """Median seconds of the re-check and of the full diff, whether they found the same
    rows, and how many rows ``fresh`` changed before each re-check."""
    trees, fulls, same, changed = [], [], True, 0
    for _ in range(repeat):
        changed = fresh()
        tree_s, tree_rows = tree()
        full_s, full_rows = full()
        trees.append(tree_s)
        fulls.append(full_s)
        same = same and tree_rows == full_rows
    return statistics.median(trees), statistics.median(fulls), same, changed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="demo")
    p.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"))
    p.add_argument("--rows", default="1000000", help="row counts, comma-separated")
    p.add_argument("--shapes", default="narrow,wide")
    p.add_argument("--changes", default="1,100,10000,10000c",
                   help="rows changed per cell; a trailing c: consecutive keys")
    p.add_argument("--nodes", default="2,3", help="node counts (the first N nodes)")
    p.add_argument("--warm", action="store_true", help="also time both in this process")
    p.add_argument("--warm-only", action="store_true", help="time only in this process")
    p.add_argument("--repeat", type=int, default=1, help="times per cell; medians reported")
    args = p.parse_args()
    warm = args.warm or args.warm_only
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
    here = Warm(env) if warm else None
    columns = ([] if args.warm_only else ["full table-diff", "mtree table-diff", "ratio"]) + \
        (["warm full", "warm mtree", "warm ratio"] if warm else [])
    head = ["rows", "shape", "changed", "nodes", *columns, "target"]
    print(f"| {' | '.join(head)} |\n|{'---|' * len(head)}", flush=True)
    missed = 0
    same = True
    warmed = False
    for rows in (int(r) for r in args.rows.split(",")):
        for shape in args.shapes.split(","):
            load(targets, shape, rows)
            ace(env, "mtree", "teardown", args.cluster, f"public.{TABLE}", "--quiet")
            ace(env, "mtree", "build", args.cluster, f"public.{TABLE}", "--quiet")
            # the first re-check after a build finds every leaf agreeing and marks it so, as
            # a schedule's first run would: from then on changed keys are kept (untimed)
            ace(env, "mtree", "table-diff", args.cluster, f"public.{TABLE}", "--quiet")
            for cell, what in enumerate(changes):
                for count in node_counts:
                    nodes = ",".join(t.node for t in targets[:count])  # type: ignore[attr-defined]
                    words = [args.cluster, f"public.{TABLE}", f"--nodes={nodes}"]
                    # a new value before every re-check
                    changed_again = partial(change_again, targets[1], what, rows,
                                            f"changed {cell} {count}", itertools.count())
                    cells: list[str] = []
                    ratio, changed = 0.0, 0
                    if not args.warm_only:
                        tree_s, full_s, agree, changed = timed(
                            changed_again, partial(cli_diff, env, ["mtree", "table-diff", *words]),
                            partial(cli_diff, env, ["table-diff", *words]), args.repeat)
                        ratio = tree_s / full_s
                        same = same and agree
                        cells += [f"{full_s:.2f} s", f"{tree_s:.2f} s", f"{ratio:.3f}"]
                    if here is not None:
                        if not warmed:  # imports and caches: paid once, before any timing
                            timed(changed_again, partial(here.tree, words),
                                  partial(here.full, words), 1)
                            warmed = True
                        tree_s, full_s, agree, changed = timed(
                            changed_again, partial(here.tree, words),
                            partial(here.full, words), args.repeat)
                        ratio = tree_s / full_s
                        same = same and agree
                        cells += [f"{full_s:.3f} s", f"{tree_s:.3f} s", f"{ratio:.3f}"]
                    target = TARGET_AT_SCALE if rows >= 10_000_000 and \
                        changed <= rows // 10_000 else TARGET
                    missed += ratio > target
                    print(f"| {rows:,} | {shape} | {what.label} ({changed}) | {count} | "
                          f"{' | '.join(cells)} | "
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
