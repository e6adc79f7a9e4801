#!/usr/bin/env python3
"""How long the cluster checks take: schema-diff of a big schema, repset-diff of a big set.

1. ``schema-diff`` of a schema of 1,000 tables (each with a key, three
   columns, an index, a check constraint), identical on every node but for a
   few changes on n2: one catalog query per object kind per node, so it must
   finish in seconds.
2. ``repset-diff`` of a set of 20 tables of 100k rows each (a publication on
   every node), against the sum of the same 20 ``table-diff`` runs one after
   another; in this process and, with ``--fleet``, on a two-worker fleet
   (a Redis and two Celery workers started here).

Each command runs as the real ``ace`` program in a subprocess, timed from spawn
to exit. Without ``--cluster`` a scratch three-node cluster is started under a
temporary folder and stopped at the end.

Usage::

    .venv/bin/python bench/bench_checks.py [--fleet] [--tables 1000] [--set-tables 20]
    ACE_CLUSTER_DIR=/tmp/acedev/cluster .venv/bin/python bench/bench_checks.py --cluster dev

All SQL text here is built from this module's constants and numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from _common import REPO_ROOT, fmt_s, load_targets, run_measured, venv_tool

sys.path.insert(0, str(REPO_ROOT / "deploy"))
sys.path.insert(0, str(REPO_ROOT / "tests"))


def _dsns(cluster_dir: Path, cluster: str) -> list[str]:
    return [f"host={t.host} port={t.port} dbname={t.dbname} user={t.user} password={t.password}"
            for t in load_targets(cluster_dir, cluster)]


def _on_each(dsns: list[str], statements: list[str]) -> None:
    for dsn in dsns:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            for st in statements:
                cur.execute(st)
        conn.close()


def build_schema(dsns: list[str], tables: int) -> None:
    body = [
        "DROP SCHEMA IF EXISTS bench_sd CASCADE", "CREATE SCHEMA bench_sd",
        "DO $$ BEGIN FOR i IN 1.." + str(tables) + " LOOP EXECUTE format("
        "'CREATE TABLE bench_sd.t%s (id bigint PRIMARY KEY, name text NOT NULL, qty int "
        "DEFAULT 0 CHECK (qty >= 0), at timestamptz)', i); EXECUTE format("
        "'CREATE INDEX t%s_name ON bench_sd.t%s (name)', i, i); END LOOP; END $$",
    ]
    _on_each(dsns, body)
    mid, last = max(1, tables // 2), tables
    _on_each(dsns[1:2], ["ALTER TABLE bench_sd.t1 ALTER COLUMN qty SET DEFAULT 1",
                         f"DROP INDEX bench_sd.t{mid}_name",
                         f"ALTER TABLE bench_sd.t{last} ADD COLUMN extra text"])


def build_set(dsns: list[str], tables: int, rows: int) -> list[str]:
    names = [f"bench_rs.s{i}" for i in range(1, tables + 1)]
    body = ["DROP SCHEMA IF EXISTS bench_rs CASCADE", "CREATE SCHEMA bench_rs",
            "DROP PUBLICATION IF EXISTS bench_set"]
    for name in names:
        body += [f"CREATE TABLE {name} (id bigint PRIMARY KEY, label text, amount numeric(12,2),"
                 " at timestamptz)",
                 f"INSERT INTO {name} SELECT g, 'label ' || g, g * 0.25, '2024-01-01 00:00+00'"
                 f"::timestamptz + g * interval '1 second' FROM generate_series(1, {rows}) g",
                 f"ANALYZE {name}"]
    body.append(f"CREATE PUBLICATION bench_set FOR TABLE {', '.join(names)}")
    _on_each(dsns, body)
    _on_each(dsns[1:2], [f"UPDATE {names[min(3, len(names) - 1)]} SET label = 'changed' WHERE id % 1009 = 0"])
    return names


def ace(env: dict[str, str], *args: str) -> float:
    run = run_measured([venv_tool("ace"), *args], {**env, "ACE_NO_PROGRESS": "1"})
    if run.returncode not in (0, 1):
        raise SystemExit(f"ace {' '.join(args)} failed ({run.returncode}): {run.stderr}")
    return run.wall


@contextmanager
def scratch_cluster() -> Iterator[tuple[Path, str]]:
    from localcluster import LocalCluster, free_ports
    base = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    os.chmod(base, 0o755)
    cluster = LocalCluster(base / "pg", name="benchchk", ports=free_ports(3, 19000, 19499))
    cluster.start()
    try:
        cluster.write_cluster_json(base / "cluster")
        yield base / "cluster", "benchchk"
    finally:
        cluster.stop()


@contextmanager
def fleet(env: dict[str, str]) -> Iterator[dict[str, str]]:
    from fleet_helpers import Fleet, RedisServer, fleet_env
    work = Path(tempfile.mkdtemp(prefix="bench-checks-fleet-"))
    redis = RedisServer(work)
    redis.start()
    saved = dict(os.environ)
    os.environ.update(env)
    fl = Fleet(work, fleet_env(redis, work))
    os.environ.clear()
    os.environ.update(saved)
    fl.start()
    try:
        yield fl.env
    finally:
        fl.stop()
        redis.stop()


def measure(cluster_dir: Path, cluster: str, opts: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="bench-checks-out-"))
    env = {**os.environ, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(out)}
    env.pop("ACE_BROKER_URL", None)
    dsns = _dsns(cluster_dir, cluster)
    build_schema(dsns, opts.tables)
    walls = [ace(env, "schema-diff", cluster, "bench_sd", "--quiet") for _ in range(3)]
    print(f"schema-diff, {opts.tables} tables x 3 nodes: {fmt_s(min(walls))} "
          f"(best of 3; runs {', '.join(fmt_s(w) for w in walls)})")
    names = build_set(dsns, opts.set_tables, opts.rows)
    label = f"{opts.set_tables} tables x {opts.rows:,} rows"
    separate = sum(ace(env, "table-diff", cluster, n, "--quiet") for n in names)
    print(f"table-diff of each table, one after another ({label}): {fmt_s(separate)}")
    whole = ace(env, "repset-diff", cluster, "bench_set", "--quiet")
    print(f"repset-diff in this process ({label}): {fmt_s(whole)}")
    if opts.fleet:
        with fleet(env) as fenv:
            fenv = {**fenv, "ACE_CLUSTER_DIR": str(cluster_dir), "ACE_OUTPUT_DIR": str(out)}
            ace(fenv, "table-diff", cluster, names[0], "--quiet")  # warm the workers
            separate = sum(ace(fenv, "table-diff", cluster, n, "--quiet") for n in names)
            print(f"fleet: table-diff of each table, one after another: {fmt_s(separate)}")
            whole = ace(fenv, "repset-diff", cluster, "bench_set", "--quiet")
            print(f"fleet: repset-diff (one job, per-table chords): {fmt_s(whole)}")
    _on_each(dsns, ["DROP SCHEMA IF EXISTS bench_sd CASCADE",
                    "DROP SCHEMA IF EXISTS bench_rs CASCADE",
                    "DROP PUBLICATION IF EXISTS bench_set"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", help="an existing cluster (default: start a scratch one)")
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--set-tables", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--fleet", action="store_true", help="also time a two-worker fleet")
    opts = parser.parse_args()
    if opts.cluster:
        measure(Path(os.environ.get("ACE_CLUSTER_DIR", "cluster")), opts.cluster, opts)
        return
    with scratch_cluster() as (cluster_dir, name):
        measure(cluster_dir, name, opts)


if __name__ == "__main__":
    main()
