#!/usr/bin/env python3
"""How fast, and in how much memory, ``ace table-diff`` compares a large table.

Builds the table ``bench_diff`` (1M rows by default; int key, text, numeric,
timestamptz, float8, jsonb, an enum and a text[]) with the same rows on every
node, makes some nodes differ at each requested divergence level, and prints,
from one run:

* the floor: every node hashing the text of all its rows in one query
  (``SELECT sum(hashtextextended(t::text, 0)) FROM bench_diff t``), all nodes at
  once, one connection each; wall time is until the last node finishes. It is
  measured before and after each ``ace`` run, to show the noise;
* the wall time of the real ``ace table-diff`` command (a subprocess, from
  spawn to exit) and its ratio to the median floor;
* the peak memory of the ACE processes.

Usage::

    .venv/bin/python bench/bench_diff.py                      # 1M rows: 0, 0.01%, 1%, 10%
    .venv/bin/python bench/bench_diff.py --also-10m           # and then again at 10M rows
    ACE_CLUSTER_DIR=/tmp/acedev/cluster .venv/bin/python bench/bench_diff.py --cluster dev
    .venv/bin/python bench/bench_diff.py --rows 10000000 --divergence 0,0.01%
    .venv/bin/python bench/bench_diff.py --modes local,fleet  # same data, side by side

See bench/README.md for what the figures mean. All SQL text here is built from
this module's constants and numbers, never from user input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO_ROOT,
    BenchError,
    MeasuredRun,
    check_reachable,
    fmt_mb,
    fmt_s,
    load_targets,
    median,
    on_each_node,
    open_connection,
    run_measured,
    timed_on_each_node,
    venv_tool,
)
from diff_phases import PhaseReport, print_phases, profile_diff
from psycopg2 import sql

from ace_shared.difffile.format import read_tail_summary
from ace_shared.nodes.connection import NodeTarget

TABLE = "bench_diff"
META = "bench_diff_meta"
ENUM = "bench_diff_status"
# Bump when the generated rows change, so an old table is rebuilt rather than reused.
DATA_VERSION = 1
# Multiplying by a prime and reducing modulo the row count visits every row once in
# a scattered order, so the first K positions are K distinct keys spread everywhere.
SCATTER_PRIME = 2654435761
MODES = ("local", "fleet")
# (up to this divergence %, the wall time may be at most this many floors)
TARGET_RATIOS = ((0.0, 1.3), (0.01, 1.3), (1.0, 2.0), (10.0, 3.0))
BIG_ROWS = 10_000_000
TARGET_PEAK_MB = 300
TARGET_FLEET_OVERHEAD = 1.15  # fleet wall time over in-process wall time, same data
FLOOR_SQL = sql.SQL("SELECT sum(hashtextextended(t::text, 0)) FROM {} t").format(
    sql.Identifier(TABLE))

# Every column of row number g (g = 1..rows); the key is 2g so that inserted rows
# (key 2g+1) fall between existing ones, anywhere in the key space.
ROW_SELECT = """
    2 * g,
    CASE WHEN mod(g, 1000) = 0 THEN NULL ELSE 'customer ' || g || ' ' || md5(g::text) END,
    round(mod(g, 1000003) * 0.37, 2)::numeric(12, 2),
    timestamptz '2020-01-01 00:00:00+00' + g * interval '37 seconds',
    mod(g, 9973) / 7.0::float8,
    jsonb_build_object('g', g, 'tier', 'k' || mod(g, 17), 'ok', mod(g, 2) = 0,
                       'ratio', round(mod(g, 101) / 3.0, 4)),
    (enum_range(NULL::bench_diff_status))[(1 + mod(g, 4))::int],
    ARRAY['t' || mod(g, 7), 't' || mod(g, 11), 'tag ' || mod(g, 13)]
"""

CREATE_SQL = f"""
DROP TABLE IF EXISTS {TABLE};
DROP TABLE IF EXISTS {META};
DROP TYPE IF EXISTS {ENUM};
CREATE TYPE {ENUM} AS ENUM ('new', 'active', 'suspended', 'closed');
CREATE TABLE {TABLE} (
    id bigint NOT NULL,
    name text,
    amount numeric(12, 2),
    created timestamptz,
    score float8,
    doc jsonb,
    status {ENUM},
    tags text[]
);
CREATE TABLE {META} (rows bigint, data_version int, divergence_pct float8);
"""


# --- divergence plan -----------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """Which rows differ at one level: ``count`` positions j, scattered over the keys.

    Position j is row number ``g = j * SCATTER_PRIME % rows + 1`` on the
    (j mod m)-th of the m divergent nodes (every node but the first); what
    happens to it cycles through ``ACTIONS`` with j div m. Each position makes
    exactly one key differ on exactly one node.
    """

    rows: int
    pct: float

    @property
    def count(self) -> int:
        return round(self.rows * self.pct / 100.0)

    def per_node(self, m: int) -> list[int]:
        return [len(range(slot, self.count, m)) for slot in range(m)]

    def label(self) -> str:
        return "none" if self.pct == 0 else f"{self.pct:g}%"


# Updates change a different column each time (all of the types get a turn),
# then two deletes and one insert; one in eight positions is an insert.
ACTIONS = (
    ("update", "name = 'changed ' || p.j"),
    ("update", "amount = amount + 1"),
    ("update", "created = created + interval '1 second', score = score + 0.5"),
    ("update", "doc = doc || jsonb_build_object('changed', p.j)"),
    ("update", "status = CASE WHEN status = 'closed' THEN 'new'::bench_diff_status "
               "ELSE (enum_range(status, NULL))[2] END, tags = array_append(tags, 'x')"),
    ("delete", ""),
    ("delete", ""),
    ("insert", ""),
)


def _positions_cte(div: Divergence, slot: int, m: int) -> tuple[str, list[object]]:
    """``p(j, g, action)``: the positions of ``div`` that land on divergent node ``slot``."""
    cte = ("WITH p AS (SELECT j, (j * %s::bigint %% %s) + 1 AS g, (j / %s) %% %s AS action "
           "FROM generate_series(%s::bigint, %s::bigint - 1, %s) AS j) ")
    return cte, [SCATTER_PRIME, div.rows, m, len(ACTIONS), slot, div.count, m]


def diverge_statements(div: Divergence, slot: int, m: int) -> list[tuple[str, list[object]]]:
    """SQL that turns a clean node into divergent node ``slot`` of ``m`` at level ``div``."""
    if div.count == 0:
        return []
    out: list[tuple[str, list[object]]] = []
    for action_no, (kind, change) in enumerate(ACTIONS):
        cte, params = _positions_cte(div, slot, m)
        if kind == "update":
            stmt = (f"{cte}UPDATE {TABLE} t SET {change} FROM p "  # noqa: S608
                    "WHERE t.id = 2 * p.g AND p.action = %s")
        elif kind == "delete":
            stmt = (f"{cte}DELETE FROM {TABLE} t USING p "  # noqa: S608
                    "WHERE t.id = 2 * p.g AND p.action = %s")
        else:
            stmt = (f"{cte}INSERT INTO {TABLE} SELECT 2 * g + 1, 'inserted ' || j, 0, "  # noqa: S608
                    "timestamptz '2030-01-01 00:00:00+00', 0, '{}'::jsonb, 'new', '{}' "
                    "FROM p WHERE action = %s")
        out.append((stmt, [*params, action_no]))
    return out


def restore_statements(div: Divergence, slot: int, m: int) -> list[tuple[str, list[object]]]:
    """SQL that undoes :func:`diverge_statements`: drop every touched key, put the originals back."""
    if div.count == 0:
        return []
    cte, params = _positions_cte(div, slot, m)
    delete = f"{cte}DELETE FROM {TABLE} t USING p WHERE t.id IN (2 * p.g, 2 * p.g + 1)"  # noqa: S608
    cte2, params2 = _positions_cte(div, slot, m)
    insert = f"{cte2}INSERT INTO {TABLE} SELECT {ROW_SELECT} FROM p"  # noqa: S608
    return [(delete, params), (insert, params2)]


def expected_count(rows: int, div: Divergence, slot: int | None, m: int) -> int:
    """Row count of a node (``slot`` None for the first, clean node) at level ``div``."""
    if slot is None or div.count == 0:
        return rows
    positions = range(slot, div.count, m)
    deletes = sum(1 for j in positions if ACTIONS[(j // m) % len(ACTIONS)][0] == "delete")
    inserts = sum(1 for j in positions if ACTIONS[(j // m) % len(ACTIONS)][0] == "insert")
    return rows - deletes + inserts


# --- the table ----------------------------------------------------------------------------


def _slot(targets: Sequence[NodeTarget], target: NodeTarget) -> int | None:
    index = [t.node for t in targets].index(target.node)
    return None if index == 0 else index - 1


def read_state(target: NodeTarget) -> tuple[int, int, float, int] | None:
    """(rows, data version, divergence %, actual row count) of a node's table, or None."""
    conn = open_connection(target)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                        (f"public.{TABLE}", f"public.{META}"))
            if not cur.fetchone()[0]:
                return None
            cur.execute(f"SELECT rows, data_version, divergence_pct FROM {META}")  # noqa: S608
            meta = cur.fetchone()
            if meta is None:
                return None
            cur.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608
            return int(meta[0]), int(meta[1]), float(meta[2]), int(cur.fetchone()[0])
    finally:
        conn.close()


def table_is_reusable(targets: Sequence[NodeTarget], rows: int) -> float | None:
    """The divergence % the loaded table is at, if every node holds the expected rows."""
    states = on_each_node(targets, read_state)
    m = len(targets) - 1
    levels = set()
    for target in targets:
        state = states[target.node]
        if state is None:
            return None
        meta_rows, version, pct, actual = state
        if meta_rows != rows or version != DATA_VERSION:
            return None
        if actual != expected_count(rows, Divergence(rows, pct), _slot(targets, target), m):
            return None
        levels.add(pct)
    return levels.pop() if len(levels) == 1 else None


def load_node(target: NodeTarget, rows: int) -> None:
    conn = open_connection(target)
    try:
        with conn.cursor() as cur:
            cur.execute(CREATE_SQL)
            cur.execute(f"INSERT INTO {TABLE} SELECT {ROW_SELECT} "  # noqa: S608
                        "FROM generate_series(1, %s::bigint) AS g", (rows,))
            cur.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
            cur.execute(f"INSERT INTO {META} VALUES (%s, %s, 0)",  # noqa: S608
                        (rows, DATA_VERSION))
            cur.execute(f"VACUUM ANALYZE {TABLE}")
    finally:
        conn.close()


def ensure_table(targets: Sequence[NodeTarget], rows: int, rebuild: bool) -> float:
    """Make every node hold the clean table of ``rows`` rows (reused when it already does)."""
    if not rebuild:
        level = table_is_reusable(targets, rows)
        if level is not None:
            print(f"reusing {TABLE} ({rows:,} rows on every node, divergence {level:g}%)")
            return level
    print(f"loading {TABLE}: {rows:,} rows on each of {len(targets)} nodes ...", flush=True)
    t0 = time.perf_counter()
    on_each_node(targets, lambda t: load_node(t, rows))
    print(f"loaded in {fmt_s(time.perf_counter() - t0)}")
    return 0.0


def set_divergence(targets: Sequence[NodeTarget], rows: int, current: float,
                   wanted: float) -> None:
    """Move the divergent nodes from level ``current`` to ``wanted`` (via clean rows)."""
    if current == wanted:
        return
    m = len(targets) - 1

    def change(target: NodeTarget) -> None:
        slot = _slot(targets, target)
        conn = open_connection(target)
        try:
            with conn.cursor() as cur:
                if slot is not None:
                    conn.autocommit = False
                    for stmt, params in restore_statements(Divergence(rows, current), slot, m):
                        cur.execute(stmt, params)
                    for stmt, params in diverge_statements(Divergence(rows, wanted), slot, m):
                        cur.execute(stmt, params)
                    cur.execute(f"UPDATE {META} SET divergence_pct = %s",  # noqa: S608
                                (wanted,))
                    conn.commit()
                    conn.autocommit = True
                    cur.execute(f"VACUUM ANALYZE {TABLE}")
                else:
                    cur.execute(f"UPDATE {META} SET divergence_pct = %s",  # noqa: S608
                                (wanted,))
        finally:
            conn.close()

    on_each_node(targets, change)


# --- the floor ---------------------------------------------------------------------------


def floor_once(targets: Sequence[NodeTarget]) -> float:
    """Wall time of every node hashing all its rows' text at once (until the last finishes)."""
    conns = on_each_node(targets, open_connection)

    def hash_all(target: NodeTarget) -> object:
        with conns[target.node].cursor() as cur:
            cur.execute(FLOOR_SQL)
            return cur.fetchone()[0]

    try:
        return timed_on_each_node(targets, hash_all).wall
    finally:
        for conn in conns.values():
            conn.close()


# --- modes -------------------------------------------------------------------------------


def fleet_unavailable_reason(env: dict[str, str]) -> str | None:
    """Why fleet mode cannot run here, or None when a worker answers a ping."""
    if not env.get("ACE_BROKER_URL"):
        return "ACE_BROKER_URL unset"
    try:
        done = subprocess.run([venv_tool("celery"), "-A", "ace_workers", "inspect", "ping",
                               "--timeout", "5"], env=env, capture_output=True, text=True,
                              timeout=60, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"celery inspect ping failed ({exc})"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        return f"no workers answer `celery -A ace_workers inspect ping` ({last[-1] if last else done.returncode})"
    return None


def fleet_worker_pids(env: dict[str, str]) -> list[int]:
    """Main pids of the fleet's workers on this machine (their pool children are found from them)."""
    try:
        done = subprocess.run([venv_tool("celery"), "-A", "ace_workers", "inspect", "stats",
                               "--json", "--timeout", "5"], env=env, capture_output=True,
                              text=True, timeout=60, cwd=REPO_ROOT)
        stats = json.loads(done.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return []
    pids = []
    for worker in stats.values() if isinstance(stats, dict) else []:
        pid = worker.get("pid") if isinstance(worker, dict) else None
        if isinstance(pid, int) and Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def mode_env(mode: str, base: dict[str, str], output_dir: Path, max_diffs: int) -> dict[str, str]:
    env = dict(base)
    env["ACE_NO_PROGRESS"] = "1"
    env["ACE_OUTPUT_DIR"] = str(output_dir)
    env["ACE_MAX_ALLOWED_DIFFS"] = str(max_diffs)
    if mode == "local":
        env.pop("ACE_BROKER_URL", None)
    return env


# --- one measurement ---------------------------------------------------------------------


@dataclass
class AceRun:
    mode: str
    level: Divergence
    floor_before: float
    floor_after: float
    run: MeasuredRun
    summary: dict[str, object] = field(default_factory=dict)
    expected_pairs: dict[str, int] = field(default_factory=dict)
    phases: PhaseReport | None = None

    @property
    def ok_exit(self) -> bool:
        return self.run.returncode == (0 if self.level.count == 0 else 1)

    @property
    def diffs_right(self) -> bool:
        got = self.summary.get("diff_rows_by_pair") or {}
        want = {k: v for k, v in self.expected_pairs.items() if v}
        return self.summary.get("diff_rows") == self.level.count and got == want


def summary_from_output(stdout: str) -> dict[str, object]:
    """The summary of the diff file ``ace`` named, read from the file's end.

    Loading a whole file of 100,000 differing rows would grow this process by
    hundreds of MB, and the next ``ace`` it starts would count that in its
    ``ru_maxrss`` (a child's peak includes its parent's pages until ``exec``).
    """
    match = re.search(r"written to (\S+\.json)", stdout)
    if not match:
        return {}
    try:
        summary = read_tail_summary(Path(match.group(1)))
        if summary is None:
            with open(match.group(1), encoding="utf-8") as fh:
                summary = json.load(fh).get("summary", {})
        return summary or {}
    except (OSError, json.JSONDecodeError):
        return {}


def expected_pairs(targets: Sequence[NodeTarget], div: Divergence) -> dict[str, int]:
    """Differing keys per node pair: the first node against slot s, and slot against slot."""
    names = [t.node for t in targets]
    per = div.per_node(len(names) - 1)
    out = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            left = 0 if a == 0 else per[a - 1]
            out[f"{names[a]}/{names[b]}"] = left + per[b - 1]
    return out


def ace_command(args: argparse.Namespace) -> list[str]:
    cmd = [args.ace, "table-diff", args.cluster, f"public.{TABLE}"]
    if args.block_rows:
        cmd += ["--block-rows", str(args.block_rows)]
    if args.max_cpu_ratio:
        cmd += ["--max-cpu-ratio", str(args.max_cpu_ratio)]
    if args.profile_dir:
        return [args.py_spy, "record", "--subprocesses", "--threads", "--idle", "--rate", "200",
                "--format", "raw", "-o", "PROFILE_PATH", "--", *cmd]
    return cmd


def measure(args: argparse.Namespace, targets: Sequence[NodeTarget], mode: str,
            div: Divergence, base_env: dict[str, str]) -> AceRun:
    floor_before = floor_once(targets)
    output_dir = Path(tempfile.mkdtemp(prefix="bench-diff-out-"))
    try:
        env = mode_env(mode, base_env, output_dir, max(args.max_diffs, 2 * div.count))
        cmd = ace_command(args)
        if args.profile_dir:
            name = div.label().replace('%', 'pct')
            profile = Path(args.profile_dir) / f"ace_{mode}_{name}.txt"
            cmd = [str(profile) if c == "PROFILE_PATH" else c for c in cmd]
        workers = fleet_worker_pids(env) if mode == "fleet" else []
        run = run_measured(cmd, env, extra_roots=lambda: workers)
        summary = summary_from_output(run.stdout)
    finally:
        if not args.keep_output:
            shutil.rmtree(output_dir, ignore_errors=True)
        else:
            print(f"  output kept in {output_dir}")
    floor_after = floor_once(targets)
    result = AceRun(mode, div, floor_before, floor_after, run, summary,
                    expected_pairs(targets, div))
    if not result.ok_exit:
        print(f"  ace exited {run.returncode}: {run.stderr.strip()[-400:]}", file=sys.stderr)
    if args.phases and mode == "local":
        first = targets[0]
        result.phases = profile_diff(Path(args.cluster_dir).resolve(), args.cluster,
                                     f"public.{TABLE}", (first.host, first.port),
                                     args.block_rows, args.max_cpu_ratio,
                                     max(args.max_diffs, 2 * div.count))
    return result


# --- reporting ----------------------------------------------------------------------------


def ratio_target(div: Divergence) -> float | None:
    return next((ratio for pct, ratio in TARGET_RATIOS if div.pct <= pct), None)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def memory_judged_kb(r: AceRun) -> int:
    """The figure the memory target applies to: what any one ACE process may hold.

    In-process, the whole tree is ACE's; on a fleet the tree also sums the pool
    processes of every worker on this machine, busy or idle, which is Celery's
    footprint times the pool size rather than what a diff costs.
    """
    per_process = max(r.run.peak_process_kb, r.run.ru_maxrss_kb)
    return per_process if r.mode == "fleet" else max(per_process, r.run.peak_tree_pss_kb)


def print_fleet_overhead(runs: list[AceRun]) -> None:
    """Fleet over in-process wall time per level, from runs paired in the order taken."""
    levels: dict[str, tuple[list[float], list[float]]] = {}
    for r in runs:
        local, fleet = levels.setdefault(r.level.label(), ([], []))
        (fleet if r.mode == "fleet" else local).append(r.run.wall)
    rows = [(label, [f / lo for lo, f in zip(local, fleet, strict=False)])
            for label, (local, fleet) in levels.items() if local and fleet]
    if not rows:
        return
    print()
    print(f"fleet overhead (fleet wall / in-process wall, runs paired in turn; target <= "
          f"{TARGET_FLEET_OVERHEAD}):")
    for label, ratios in rows:
        med = median(ratios)
        print(f"  divergence {label:>6}: median {med:.2f} over {len(ratios)} pair(s), "
              f"range {min(ratios):.2f}-{max(ratios):.2f}  "
              f"{verdict(med <= TARGET_FLEET_OVERHEAD)}")


def print_report(runs: list[AceRun], modes: list[str], skipped: dict[str, str],
                 rows: int, targets: Sequence[NodeTarget], args: argparse.Namespace) -> None:
    floors = [f for r in runs for f in (r.floor_before, r.floor_after)]
    floor_med = median(floors)
    print()
    print(f"table-diff benchmark: {rows:,} rows of public.{TABLE} on "
          f"{', '.join(t.node for t in targets)} (cluster {args.cluster}), "
          f"{os.cpu_count()} CPUs here")
    print(f"floor (all nodes hash every row's text at once, one query each): median "
          f"{fmt_s(floor_med)} over {len(floors)} measurements, "
          f"range {fmt_s(min(floors))}-{fmt_s(max(floors))}")
    print("memory: the ace process tree (fleet: and the workers on this machine) polled every "
          "50 ms from /proc: peak of the tree's PSS sum (shared pages counted once) and of its "
          "RSS sum, largest single process (RSS); maxrss = the kernel's ru_maxrss of the ace "
          "command itself (wait4)")
    print()
    header = (f"{'mode':<6} {'divergence':>10} {'diff rows':>10} {'floor before/after':>19} "
              f"{'ace wall':>9} {'in-ace':>8} {'ratio':>6} {'target':>7} "
              f"{'tree PSS':>9} {'tree RSS':>9} {'max proc':>9} {'maxrss':>7} {'verdict':<8}")
    print(header)
    print("-" * len(header))
    for r in runs:
        ratio = r.run.wall / floor_med
        target = ratio_target(r.level)
        peak_mb = memory_judged_kb(r) / 1024
        ok = r.ok_exit and r.diffs_right and peak_mb < TARGET_PEAK_MB
        if target is not None:
            ok = ok and ratio <= target
        in_ace = r.summary.get("time_taken")
        found = r.summary.get("diff_rows", "?")
        print(f"{r.mode:<6} {r.level.label():>10} {f'{found}/{r.level.count}':>10} "
              f"{fmt_s(r.floor_before):>9}/{fmt_s(r.floor_after):<9} {fmt_s(r.run.wall):>9} "
              f"{(fmt_s(float(in_ace)) if in_ace is not None else '?'):>8} {ratio:>6.2f} "
              f"{(f'<={target}' if target else '-'):>7} {fmt_mb(r.run.peak_tree_pss_kb):>9} "
              f"{fmt_mb(r.run.peak_tree_kb):>9} {fmt_mb(r.run.peak_process_kb):>9} "
              f"{fmt_mb(r.run.ru_maxrss_kb):>7} {verdict(ok):<8}")
        if not r.diffs_right:
            print(f"       diff rows by pair {r.summary.get('diff_rows_by_pair')} "
                  f"(expected {r.expected_pairs}); exit code {r.run.returncode}")
            if r.summary.get("diff_partial") and r.mode == "fleet":
                # the limit is the workers' setting: this bench's environment does not reach them
                print(f"       the fleet stopped at its workers' MAX_ALLOWED_DIFFS "
                      f"({r.summary.get('max_allowed_diffs')}); start them with "
                      f"ACE_MAX_ALLOWED_DIFFS={2 * r.level.count} or more to measure this level")
    for mode, reason in skipped.items():
        print(f"{mode}: not available ({reason})")
    print_fleet_overhead(runs)
    for r in runs:
        if r.phases is not None:
            print()
            print_phases(r.phases, f"{r.mode}, divergence {r.level.label()}")
    print()
    ratios = ", ".join(f"<= {r} up to {p:g}%" for p, r in TARGET_RATIOS)
    print(f"targets: ratio {ratios} divergence, peak memory < {TARGET_PEAK_MB} MB (local: tree PSS, "
          "largest process and maxrss each; fleet: largest process and maxrss, since its tree "
          "also holds every idle worker process on this machine), fleet wall time <= "
          f"{TARGET_FLEET_OVERHEAD} x in-process on the same data. 'ace wall' is the "
          "command from spawn to exit; 'in-ace' is the summary's time_taken (planning, "
          "hashing, narrowing and writing the diff file, without interpreter start-up).")


# --- main --------------------------------------------------------------------------------


def parse_levels(text: str) -> list[float]:
    levels = []
    for part in text.split(","):
        word = part.strip().rstrip("%").strip().lower()
        if not word:
            continue
        if word == "none":
            levels.append(0.0)
            continue
        try:
            value = float(word)
        except ValueError:
            raise BenchError(f"--divergence takes percentages such as 0,0.01%,1%; "
                             f"{part.strip()!r} is not one.") from None
        if not 0 <= value <= 50:
            raise BenchError(f"--divergence {part.strip()} must be between 0% and 50%.")
        levels.append(value)
    return levels or [0.0]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time ace table-diff against the floor of hashing every row once.")
    parser.add_argument("--cluster", default="demo", help="cluster name (demo)")
    parser.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"),
                        help="folder of cluster files ($ACE_CLUSTER_DIR or ./cluster)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per node (1000000)")
    parser.add_argument("--divergence", default="0,0.01%,1%,10%",
                        help="comma-separated levels, as %% of rows (0,0.01%%,1%%,10%%)")
    parser.add_argument("--also-10m", action="store_true",
                        help=f"after --rows, run every level again at {BIG_ROWS:,} rows "
                             "(loading them takes several minutes)")
    parser.add_argument("--modes", default="local",
                        help="comma-separated: local, fleet (local); each runs on the same data")
    parser.add_argument("--mode", dest="modes", help="one mode; same as --modes")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each mode per level, taken in turn (local, fleet, local, "
                             "...) so that fleet/in-process ratios pair runs made close in time (1)")
    parser.add_argument("--rebuild", action="store_true", help="reload the table even if it fits")
    parser.add_argument("--block-rows", type=int, help="passed to ace (default: ace's own)")
    parser.add_argument("--max-cpu-ratio", help="passed to ace (default: ace's own)")
    parser.add_argument("--max-diffs", type=int, default=10000,
                        help="ACE_MAX_ALLOWED_DIFFS floor; raised to twice the injected "
                             "differences so every run is complete (10000)")
    parser.add_argument("--ace", default=venv_tool("ace"), help="the ace command")
    parser.add_argument("--keep-output", action="store_true", help="keep ace's diff files")
    parser.add_argument("--profile-dir",
                        help="run ace under py-spy (all threads, idle too) and write one collapsed-stack "
                             "profile per run here (flamegraph.pl or speedscope read it)")
    parser.add_argument("--phases", action="store_true",
                        help="after each local run, diff once more in this process with every "
                             "query timed, and print database time by kind of query")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy",
                        help="the py-spy command, for --profile-dir")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        raise BenchError("--rows must be at least 1000.")
    if args.repeat < 1:
        raise BenchError("--repeat must be at least 1.")
    args.levels = parse_levels(args.divergence)
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.mode_list if m not in MODES]
    if unknown:
        raise BenchError(f"--modes takes local and fleet; {', '.join(unknown)} is not one.")
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    return args


def run_levels(args: argparse.Namespace, targets: Sequence[NodeTarget], modes: list[str],
               rows: int, base_env: dict[str, str]) -> list[AceRun]:
    """Every requested divergence level, in turn, on a table of ``rows`` rows."""
    level = ensure_table(targets, rows, args.rebuild)
    print("warming the cache (one floor run, not counted) ...", flush=True)
    floor_once(targets)
    runs: list[AceRun] = []
    for pct in args.levels:
        set_divergence(targets, rows, level, pct)
        level = pct
        div = Divergence(rows, pct)
        for rep in range(args.repeat):
            for mode in modes:
                print(f"running ace table-diff ({mode}, {rows:,} rows, divergence "
                      f"{div.label()}, {div.count} keys"
                      f"{f', run {rep + 1}' if args.repeat > 1 else ''}) ...", flush=True)
                runs.append(measure(args, targets, mode, div, base_env))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        cluster_dir = Path(args.cluster_dir)
        targets = load_targets(cluster_dir, args.cluster)
        if len(targets) < 2:
            raise BenchError(f"Cluster {args.cluster} has {len(targets)} active node; "
                             "the bench needs at least two.")
        check_reachable(targets, cluster_dir, args.cluster)
        base_env = dict(os.environ, ACE_CLUSTER_DIR=str(cluster_dir.resolve()))
        skipped: dict[str, str] = {}
        modes = []
        for mode in args.mode_list:
            reason = fleet_unavailable_reason(base_env) if mode == "fleet" else None
            if reason:
                skipped[mode] = reason
                print(f"{mode}: not available ({reason}, or no workers)")
            else:
                modes.append(mode)
        sizes = [args.rows, BIG_ROWS] if args.also_10m and args.rows != BIG_ROWS else [args.rows]
        for rows in sizes:
            runs = run_levels(args, targets, modes, rows, base_env)
            print_report(runs, modes, skipped, rows, targets, args)
        return 0
    except BenchError as exc:
        print(f"bench_diff: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
