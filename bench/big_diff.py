"""Peak memory of ``table-repair --dry-run`` and ``table-rerun`` on a generated big diff file.

Used by ``bench_repair.py``. Builds ``bench_repair_big`` with the same rows on
every node, then writes, without running table-diff, a diff file in
table-diff's own layout (``{"diffs": {"n1/n2": {"n1": [...], "n2": [...]}},
"summary": {...}}``) of about the asked size: every key of the table, once per
side, the n2 side with another payload. It then runs the real ``ace``
commands as subprocesses and prints each one's wall time, peak RSS of its
process tree (sampled) and the kernel's ``ru_maxrss`` of the ``ace`` process.

All SQL text here is built from this module's constants and numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _common import (
    BenchError,
    MeasuredRun,
    fmt_mb,
    fmt_s,
    on_each_node,
    open_connection,
    run_measured,
    venv_tool,
)
from psycopg2 import sql

from ace_shared.nodes.connection import NodeTarget

TABLE = "bench_repair_big"
FILLER = "lorem ipsum dolor sit amet " * 4
CREATE = sql.SQL(
    "DROP TABLE IF EXISTS {t}; "
    "CREATE TABLE {t} (id bigint PRIMARY KEY, payload text, amount numeric(12,2), "
    "ts timestamptz, tags text[]); "
    "INSERT INTO {t} SELECT g, 'row ' || g || %s, (g %% 100000) / 100.0, "
    "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', "
    "ARRAY['t' || (g %% 7), NULL, 'quote\"' || g] FROM generate_series(1, %s) g; "
    "ANALYZE {t}").format(t=sql.Identifier("public", TABLE))


def _row(i: int, payload: str) -> str:
    return json.dumps({"id": str(i), "payload": payload, "amount": f"{(i % 100000) / 100:.2f}",
                       "ts": "2024-01-01 00:00:00+00", "tags": f'{{t{i % 7},NULL,"quote\\"{i}"}}'},
                      ensure_ascii=False)


def rows_for(megabytes: int) -> int:
    """How many keys make a file of about ``megabytes`` (each key is listed on two sides)."""
    per_key = len(_row(10**6, "row 1000000" + FILLER)) + len(_row(10**6, "changed 1000000")) + 20
    return max(1000, megabytes * 2**20 // per_key)


def write_diff_file(path: Path, cluster: str, dbname: str, keys: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{\n  "diffs": {\n    "n1/n2": {')
        for side in ("n1", "n2"):
            fh.write(("," if side == "n2" else "") + f'\n      "{side}": [')
            for i in range(1, keys + 1):
                payload = f"row {i}{FILLER}" if side == "n1" else f"changed {i}"
                fh.write(("," if i > 1 else "") + "\n        " + _row(i, payload))
            fh.write("\n      ]")
        summary = {"cluster_name": cluster, "database": dbname, "schema_name": "public",
                   "table_name": TABLE, "table": f"public.{TABLE}", "nodes": ["n1", "n2"],
                   "primary_key": ["id"], "diff_rows": keys,
                   "diff_rows_by_pair": {"n1/n2": keys}, "mismatch": True,
                   "diff_partial": False}
        fh.write("\n    }\n  },\n  \"summary\": " + json.dumps(summary, indent=2)
                 .replace("\n", "\n  ") + "\n}\n")


def build(targets: tuple[NodeTarget, ...], keys: int) -> float:
    t0 = time.perf_counter()

    def create(target: NodeTarget) -> None:
        conn = open_connection(target)
        try:
            with conn.cursor() as cur:
                cur.execute(CREATE, (FILLER, keys))
        finally:
            conn.close()
    on_each_node(targets, create)
    return time.perf_counter() - t0


def _line(label: str, run: MeasuredRun) -> None:
    if run.returncode not in (0, 1):
        raise BenchError(f"{label} failed ({run.returncode}):\n{run.stderr}")
    first = (run.stdout.strip().splitlines() or [""])[0]
    print(f"{label:<34} {fmt_s(run.wall):>9}   peak tree {fmt_mb(run.peak_tree_kb):>7}   "
          f"ru_maxrss {fmt_mb(run.ru_maxrss_kb):>7}   {first[:60]}")


def run_big_diff(targets: tuple[NodeTarget, ...], cluster: str, env: dict[str, str],
                 output: Path, megabytes: int) -> None:
    """Build the table, write the file, and measure repair (dry run) and both reruns."""
    keys = rows_for(megabytes)
    seconds = build(targets, keys)
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"big_diff_{megabytes}mb.json"
    t0 = time.perf_counter()
    write_diff_file(path, cluster, targets[0].dbname, keys)
    size = path.stat().st_size / 2**20
    print(f"built {TABLE}: {keys} rows on {len(targets)} nodes ({fmt_s(seconds)}); "
          f"diff file of {size:.0f} MB, {2 * keys} rows ({fmt_s(time.perf_counter() - t0)})")
    table = f"public.{TABLE}"
    ace = venv_tool("ace")
    _line("table-repair --dry-run (big file)",
          run_measured([ace, "table-repair", cluster, table, f"--diff-file={path}",
                        "--source-of-truth=n1", "--dry-run"], env))
    for behavior in ("multiprocessing", "hostdb"):
        _line(f"table-rerun {behavior} (big file)",
              run_measured([ace, "table-rerun", cluster, table, f"--diff-file={path}",
                            f"--behavior={behavior}"], env))
