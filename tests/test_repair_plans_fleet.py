"""A repair plan on the fleet: the CLI sends the checked plan with the task, and the
outcome is what the same plan does in this process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
from fleet_helpers import Fleet

PLAN = """
version: 1
default: {action: keep, node: n1}
tables:
  public.fp_plan:
    rules:
      - name: extra rows stay
        when: {only_on: n2}
        do: keep_both
"""


def _exec(pg_cluster: Any, node: int, *statements: str) -> None:
    with psycopg2.connect(pg_cluster.node_dsn(node)) as conn, conn.cursor() as cur:
        for stmt in statements:
            cur.execute(stmt)
    conn.close()


def _rows(pg_cluster: Any, node: int) -> list[tuple[Any, ...]]:
    with psycopg2.connect(pg_cluster.node_dsn(node)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM fp_plan ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    return rows


def _table(pg_cluster: Any) -> None:
    for i in range(3):
        _exec(pg_cluster, i, "DROP TABLE IF EXISTS fp_plan",
              "CREATE TABLE fp_plan (id int PRIMARY KEY, v text)",
              "INSERT INTO fp_plan SELECT g, 'v' || g FROM generate_series(1, 50) g")
    _exec(pg_cluster, 1, "UPDATE fp_plan SET v = 'changed' WHERE id = 3",
          "INSERT INTO fp_plan VALUES (900, 'extra')")


def _local(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in fleet.env.items() if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}
    return subprocess.run([sys.executable, "-m", "ace_api", *args],
                          env={**env, "ACE_NO_PROGRESS": "1"}, capture_output=True, text=True,
                          timeout=120)


def _run(fleet: Fleet, pg_cluster: Any, plan: Path, on_fleet: bool) -> tuple[Any, ...]:
    _table(pg_cluster)
    diff = _local(fleet, "table-diff", "testclus", "public.fp_plan")
    assert diff.returncode == 1, diff.stderr
    diff_file = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
    args = ("table-repair", "testclus", "public.fp_plan", f"--diff-file={diff_file}",
            f"--repair-plan={plan}")
    res = fleet.ace(*args) if on_fleet else _local(fleet, *args)
    assert res.returncode == 0, res.stderr
    text = re.sub(r"\d+\.\d+ s\b", "T s", res.stdout)
    return text, [_rows(pg_cluster, i) for i in range(3)]


def test_a_plan_does_on_the_fleet_what_it_does_in_process(fleet: Fleet, pg_cluster: Any,
                                                          tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    on_fleet = _run(fleet, pg_cluster, plan, True)
    in_process = _run(fleet, pg_cluster, plan, False)
    assert on_fleet == in_process
    text, rows = on_fleet
    assert 'rule 1 "extra rows stay": keep both, matched 1 key' in text
    assert rows[0] == rows[1] == rows[2] and (900, "extra") in rows[0] and (3, "v3") in rows[0]
