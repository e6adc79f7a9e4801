"""What a Merkle-tree re-check costs against a full table-diff, and what tracking costs writers.

    .venv/bin/python bench/bench_mtree.py [--cluster demo] [--rows 10000000] [--changed 0.0001]

1. Loads ``bench_mtree`` (``--rows`` rows, seven mixed columns) on every node of a
   running cluster, the same everywhere, and builds its trees (``ace mtree build``).
2. Changes ``--changed`` of its rows on the second node, scattered over the key space.
3. Times ``ace mtree table-diff`` (which first folds in the change log) and then
   ``ace table-diff`` as whole commands, checks they report the same number of
   rows, and prints the ratio; ``--repeats`` times, changing the same rows to new
   values before each pair, then the median ratio. Target: the tree's re-check at
   most 5% of the full diff.
4. Runs pgbench for ``--seconds`` on the first node against a table with its
   tracking trigger switched off and on, ``--rounds`` times each way, alternating
   (single-row inserts and updates, ``--clients`` clients), and prints the
   throughput lost in each pair and their median. Target: at most 15%.

Figures are for people, not a test; quote ratios measured in one run.
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

from ace_shared.mtree.objects import tree_key  # noqa: E402
from ace_shared.nodes.ident import TableName  # noqa: E402

TABLE = "bench_mtree"
WRITE_TABLE = "bench_mtree_writes"
LOAD_SQL = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (id bigint PRIMARY KEY, a int, b text, c float8, d timestamptz,
                      e numeric(12,2), f boolean);
INSERT INTO {TABLE} SELECT g, g %% 1000, md5(g::text), g / 7.0,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', g / 100.0, g %% 2 = 0
  FROM generate_series(1, %(rows)s) g;
VACUUM ANALYZE {TABLE};
DROP TABLE IF EXISTS {WRITE_TABLE};
CREATE TABLE {WRITE_TABLE} (id bigint PRIMARY KEY, v int, t text);
INSERT INTO {WRITE_TABLE} SELECT g, g, 'row ' || g FROM generate_series(1, 100000) g;
VACUUM ANALYZE {WRITE_TABLE};
"""
PGBENCH_SCRIPT = f"""
\\set k random(1, 100000)
\\set n random(100001, 1000000000)
UPDATE {WRITE_TABLE} SET v = v + 1 WHERE id = :k;
INSERT INTO {WRITE_TABLE} VALUES (:n, 1, 'new') ON CONFLICT (id) DO UPDATE SET v = 0;
"""


def ace(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run ``ace ARGS``; return wall seconds and stdout (exit 2 is an error)."""
    started = time.monotonic()
    proc = subprocess.run([venv_tool("ace"), *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise BenchError(f"ace {' '.join(args)} failed: {proc.stderr.strip()}")
    return wall, proc.stdout


def diff_rows(stdout: str) -> int:
    found = re.search(r"(?:Diffs|Diff summary) written to (\S+\.json)", stdout)
    if not found:
        raise BenchError(f"no diff file in: {stdout!r}")
    return int(json.loads(Path(found.group(1)).read_text())["summary"]["diff_rows"])


def set_tracking_on(cur: object, on: bool) -> None:
    switch = "ENABLE ALWAYS" if on else "DISABLE"
    cur.execute(f"ALTER TABLE {WRITE_TABLE} "  # type: ignore[attr-defined]  # noqa: S608
                + ", ".join(f"{switch} TRIGGER ace_mtree_{event}"
                            for event in ("ins", "upd", "del")))


def set_tracking(target: object, on: bool) -> None:
    """Switch the write table's tracking triggers on (as ACE builds them) or off."""
    conn = open_connection(target)  # type: ignore[arg-type]
    with conn.cursor() as cur:
        set_tracking_on(cur, on)
    conn.commit()
    conn.close()


def reset_writes(target: object) -> None:
    """The same start for every pgbench run: the write table's 100,000 rows, vacuumed and
    analyzed, its change log empty, no checkpoint due.

    Without this, the table and the log grow with every run and autovacuum and
    checkpoints fall on whichever run they fall on: single pairs then differed
    by 30 points. Emptying the log by hand leaves that table's tree wrong; it is
    only there to be written to, and is torn down afterwards.
    """
    conn = open_connection(target)  # type: ignore[arg-type]
    with conn.cursor() as cur:
        set_tracking_on(cur, False)
        cur.execute(f"DELETE FROM {WRITE_TABLE} WHERE id > 100000")  # noqa: S608
        cur.execute("SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'ace_mtree' AND c.relname = 'log_' || %s",
                    (tree_key(TableName("public", WRITE_TABLE)),))
        for (log,) in cur.fetchall():
            cur.execute(f"TRUNCATE {log}")
        cur.execute(f"VACUUM ANALYZE {WRITE_TABLE}")
        cur.execute("CHECKPOINT")
    conn.close()


def postmaster_pid(target: object) -> int | None:
    """The node's postmaster, when it runs on this machine (its backend's parent)."""
    conn = open_connection(target)  # type: ignore[arg-type]
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
        try:
            with open(f"/proc/{backend}/stat") as fh:
                return int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return None  # another machine's node
        finally:
            conn.close()


def server_cpu_seconds(postmaster: int) -> float:
    """CPU used by the node's server processes so far: the live ones, and (through the
    postmaster's children's times) the backends that ended, such as pgbench's."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster:
            total += sum(int(f) for f in fields[11:15])  # its own and its reaped children's
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pgbench_tps(dsn: dict[str, object], seconds: int, clients: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(PGBENCH_SCRIPT)
    os.chmod(fh.name, 0o644)
    env = {**os.environ, "PGPASSWORD": str(dsn.get("password", ""))}
    pgbench = str(Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")) / "pgbench")
    proc = subprocess.run(
        [pgbench, "-n", "-f", fh.name, "-T", str(seconds), "-c", str(clients), "-j",
         str(min(clients, 2)), "-h", str(dsn["host"]), "-p", str(dsn["port"]), "-U",
         str(dsn["user"]), str(dsn["dbname"])], capture_output=True, text=True, env=env)
    os.unlink(fh.name)
    found = re.search(r"tps = ([0-9.]+)", proc.stdout)
    if not found:
        raise BenchError(f"pgbench failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return float(found.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="demo")
    p.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changed", type=float, default=0.0001, help="share of rows changed on n2")
    p.add_argument("--seconds", type=int, default=12, help="pgbench duration per run")
    p.add_argument("--clients", type=int, default=4)
    # single pairs spread over 10 points on a shared machine: the median of 3 moved by 4
    p.add_argument("--rounds", type=int, default=8, help="pairs of untracked and tracked runs")
    p.add_argument("--repeats", type=int, default=3,
                   help="changes and pairs of diffs (mtree, then full), one after another")
    args = p.parse_args()
    cluster_dir = Path(args.cluster_dir).resolve()
    targets = load_targets(cluster_dir, args.cluster)
    check_reachable(targets, cluster_dir, args.cluster)
    out = Path(tempfile.mkdtemp(prefix="bench-mtree-"))
    env = {**os.environ, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(out),
           "ACE_NO_PROGRESS": "1", "ACE_MAX_ALLOWED_DIFFS": "10000000"}
    env.pop("ACE_BROKER_URL", None)

    print(f"loading {args.rows} rows on {len(targets)} nodes ...", flush=True)

    def load(target: object) -> None:
        conn = open_connection(target)  # type: ignore[arg-type]
        with conn.cursor() as cur:
            for statement in filter(str.strip, LOAD_SQL.split(";")):
                cur.execute(statement, {"rows": args.rows})
        conn.close()
    on_each_node(targets, load)
    ace(env, "mtree", "init", args.cluster, "--quiet")
    build_s, _ = ace(env, "mtree", "build", args.cluster, f"public.{TABLE}", "--quiet")

    changed = max(1, int(args.rows * args.changed))
    step = max(1, args.rows // changed)
    print("\n| rows | build | full table-diff | mtree table-diff | ratio (target <= 0.05) |"
          "\n|---|---|---|---|---|", flush=True)
    ratios: list[float] = []
    same = True
    for repeat in range(args.repeats):
        # each repeat changes the same rows again, to new values: a fresh log to fold in
        conn = open_connection(targets[1])
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {TABLE} SET b = %s WHERE id %% %s = 7 AND id <= %s",  # noqa: S608
                        (f"changed {repeat}", step, step * changed))
            rows_changed = cur.rowcount
        conn.close()
        tree_s, tree_out = ace(env, "mtree", "table-diff", args.cluster, f"public.{TABLE}")
        full_s, full_out = ace(env, "table-diff", args.cluster, f"public.{TABLE}")
        same = same and diff_rows(tree_out) == diff_rows(full_out)
        ratios.append(tree_s / full_s)
        print(f"| {args.rows} | {build_s:.1f} s | {full_s:.2f} s | {tree_s:.2f} s | "
              f"{tree_s / full_s:.3f} |", flush=True)
    print(f"median ratio {statistics.median(ratios):.3f}; {rows_changed} rows changed on "
          f"{targets[1].node} each time; same rows reported: {same} "
          f"({diff_rows(full_out)} differing)")

    dsn = targets[0].dsn_kwargs()
    ace(env, "mtree", "teardown", args.cluster, f"public.{WRITE_TABLE}", "--quiet")
    ace(env, "mtree", "build", args.cluster, f"public.{WRITE_TABLE}", "--quiet")
    losses, plain_all, tracked_all = [], [], []
    postmaster = postmaster_pid(targets[0])
    cpu: dict[bool, list[float]] = {False: [], True: []}  # server µs per transaction
    for round_no in range(args.rounds):
        # untracked and tracked runs alternate (ABBA), seconds apart, on the same table: on a
        # shared machine the load moves more between two runs minutes apart than tracking costs
        order = (False, True) if round_no % 2 == 0 else (True, False)
        tps = {}
        for tracked in order:
            reset_writes(targets[0])
            set_tracking(targets[0], tracked)
            before = server_cpu_seconds(postmaster) if postmaster else 0.0
            tps[tracked] = pgbench_tps(dsn, args.seconds, args.clients)
            if postmaster:
                time.sleep(0.5)  # pgbench's backends ended: let the postmaster reap them
                used = server_cpu_seconds(postmaster) - before
                cpu[tracked].append(1e6 * used / (tps[tracked] * args.seconds))
        plain_all.append(tps[False])
        tracked_all.append(tps[True])
        losses.append(100 * (1 - tps[True] / tps[False]))
    ace(env, "mtree", "teardown", args.cluster, f"public.{WRITE_TABLE}", "--quiet")
    print(f"\nwrites (pgbench, {args.clients} clients, {args.rounds} x {args.seconds} s each way): "
          f"untracked {' '.join(f'{t:.0f}' for t in plain_all)} tps, tracked "
          f"{' '.join(f'{t:.0f}' for t in tracked_all)} tps; lost "
          f"{' '.join(f'{x:.1f}' for x in losses)}%, median {statistics.median(losses):.1f}% "
          "(target <= 15%)")
    if postmaster:
        # steadier than throughput on a shared machine: what each transaction cost the server
        plain, tracked = statistics.median(cpu[False]), statistics.median(cpu[True])
        print(f"server CPU per transaction (median): untracked {plain:.0f} µs, tracked "
              f"{tracked:.0f} µs (+{100 * (tracked / plain - 1):.1f}%)")
    return 0 if same else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_mtree: {exc}", file=sys.stderr)
        sys.exit(2)
