"""What an mtree build and an mtree table-diff take on a fleet against in-process, same data.

    .venv/bin/python bench/bench_mtree_fleet.py [--cluster demo] [--rows 1000000]
        [--changed 0.001] [--repeat 2]

Needs the fleet's settings (``ACE_BROKER_URL`` ...) in the environment and workers
running (for instance ``bash deploy/fleet.sh start``).

1. Loads ``bench_mtree_fleet`` (``--rows`` rows) on every node, the same everywhere.
2. Builds its tree in-process, then on the fleet, in turn (``--repeat`` times each),
   and checks that every build left the same leaves on every node.
3. Changes ``--changed`` of the rows on the second node, scattered, folds the
   change in once, then runs ``ace mtree table-diff`` in-process and on the fleet
   in turn, and checks both write the same differing rows.

Prints wall times and the fleet's over in-process; figures are for people, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO_ROOT,
    BenchError,
    check_reachable,
    load_targets,
    on_each_node,
    open_connection,
    venv_tool,
)
from bench_diff import fleet_unavailable_reason  # noqa: E402

from ace_shared.mtree.objects import tree_key  # noqa: E402
from ace_shared.nodes.ident import TableName  # noqa: E402

TABLE = "bench_mtree_fleet"
LOAD_SQL = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (id bigint PRIMARY KEY, a int, b text, c float8, d timestamptz);
INSERT INTO {TABLE} SELECT g, g %% 1000, md5(g::text), g / 7.0,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second'
  FROM generate_series(1, %(rows)s) g;
VACUUM ANALYZE {TABLE}
"""


def ace(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run ``ace ARGS``; wall seconds and stdout (exit 2 is an error)."""
    started = time.monotonic()
    proc = subprocess.run([venv_tool("ace"), *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise BenchError(f"ace {' '.join(args)} failed: {proc.stderr.strip()}")
    return wall, proc.stdout


def diff_doc(stdout: str) -> dict[str, Any]:
    found = re.search(r"(?:Diffs|Diff summary) written to (\S+\.json)", stdout)
    if not found:
        raise BenchError(f"no diff file in: {stdout!r}")
    return dict(json.loads(Path(found.group(1)).read_text()))


def leaves_digest(targets: Any) -> tuple[tuple[str, str], ...]:
    """Every node's leaves (bounds, counts, hashes) as one digest each."""
    blocks = f'ace_mtree."blocks_{tree_key(TableName("public", TABLE))}"'

    def digest(target: Any) -> str:
        conn = open_connection(target)
        with conn.cursor() as cur:
            cur.execute(f"SELECT md5(string_agg(ROW(block_no, l0, row_count, hash)::text, ',' "  # noqa: S608
                        f"ORDER BY block_no)) FROM {blocks}")
            found = str(cur.fetchone()[0])
        conn.close()
        return found
    return tuple(sorted(on_each_node(targets, digest).items()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="demo")
    p.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changed", type=float, default=0.001, help="share of rows changed on n2")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    cluster_dir = Path(args.cluster_dir).resolve()
    targets = load_targets(cluster_dir, args.cluster)
    check_reachable(targets, cluster_dir, args.cluster)
    out = Path(tempfile.mkdtemp(prefix="bench-mtree-fleet-"))
    fleet = {**os.environ, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(out),
             "ACE_NO_PROGRESS": "1", "ACE_MAX_ALLOWED_DIFFS": "10000000"}
    reason = fleet_unavailable_reason(fleet)
    if reason:
        raise BenchError(f"no fleet to compare with: {reason}")
    local = {k: v for k, v in fleet.items() if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}
    print(f"loading {args.rows} rows on {len(targets)} nodes ...", flush=True)

    def load(target: Any) -> None:
        conn = open_connection(target)
        with conn.cursor() as cur:
            for statement in filter(str.strip, LOAD_SQL.split(";")):
                cur.execute(statement, {"rows": args.rows})
        conn.close()
    on_each_node(targets, load)
    table = f"public.{TABLE}"
    ace(local, "mtree", "init", args.cluster, "--quiet")
    walls: dict[str, dict[str, list[float]]] = {"build": {"local": [], "fleet": []},
                                                "table-diff": {"local": [], "fleet": []}}
    digests = set()
    for _ in range(args.repeat):
        for mode, env in (("local", local), ("fleet", fleet)):
            wall, _ = ace(env, "mtree", "build", args.cluster, table, "--quiet")
            walls["build"][mode].append(wall)
            digests.add(leaves_digest(targets))
    changed = max(1, int(args.rows * args.changed))
    step = max(1, args.rows // changed)
    conn = open_connection(targets[1])
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {TABLE} SET b = 'changed' WHERE id %% %s = 7",  # noqa: S608
                    (step,))
        print(f"changed {cur.rowcount} rows on {targets[1].node}", flush=True)
    conn.close()
    ace(local, "mtree", "update", args.cluster, table, "--quiet")
    diffs = []
    for _ in range(args.repeat):
        for mode, env in (("local", local), ("fleet", fleet)):
            wall, stdout = ace(env, "mtree", "table-diff", args.cluster, table)
            walls["table-diff"][mode].append(wall)
            diffs.append(diff_doc(stdout))
    same_diff = all(d["diffs"] == diffs[0]["diffs"] for d in diffs)
    print(f"\nload: {os.getloadavg()[0]:.1f} (1 min)\n"
          "| step | in-process (median) | fleet (median) | fleet / in-process |\n|---|---|---|---|")
    for step_name, by_mode in walls.items():
        lo, fl = statistics.median(by_mode["local"]), statistics.median(by_mode["fleet"])
        print(f"| {step_name} | {lo:.2f} s | {fl:.2f} s | {fl / lo:.2f} |")
    print(f"\nleaves differing: {diffs[0]['summary']['ranges_total']}, rows differing: "
          f"{diffs[0]['summary']['diff_rows']}")
    print(f"same tree from every build: {len(digests) == 1}; same diff from every run: "
          f"{same_diff}")
    return 0 if len(digests) == 1 and same_diff else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_mtree_fleet: {exc}", file=sys.stderr)
        sys.exit(2)
