"""Shared pieces of the table-repair and table-rerun tests.

Tables are built on the ``pg_cluster`` nodes through plain psycopg2 sessions;
``ace`` commands run in this process through click's test runner (the same
code path as the console script, without a process start per command).
Snapshots read every row as ``t::text`` under ACE's pinned settings (UTC,
ISO dates, exact floats), so two nodes' snapshots are equal exactly when
their rows print the same, byte for byte.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from node_sql import Statement, run_sql

from ace_api.cli.main import main
from ace_shared.config import load_settings
from ace_shared.diff.local import run_table_diff
from ace_shared.diff.request import validate_diff_request
from ace_shared.nodes.connection import startup_options
from ace_shared.repair.run import run_table_repair
from ace_shared.rerun.run import run_table_rerun
from ace_shared.tasks.ids import new_task_id

CLUSTER = "testclus"
NODES = ("n1", "n2", "n3")


class Nodes:
    """psycopg2 access to every node of the test cluster, by node name."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def dsn(self, node: str) -> str:
        return self.cluster.node_dsn(NODES.index(node))

    def execute(self, node: str, statements: Iterable[Statement]) -> None:
        """Run statements on one node in one transaction (the node's own time zone applies)."""
        run_sql(self.dsn(node), *statements)

    def execute_as_admin(self, node: str, statements: Iterable[Statement]) -> None:
        """Like :meth:`execute`, as the postgres superuser: roles, which ACE's login may not
        create or drop."""
        run_sql(self.cluster.admin_dsn(NODES.index(node), self.cluster.dbname), *statements)

    def on_all(self, statements: Iterable[Statement]) -> None:
        todo = list(statements)
        for node in NODES:
            self.execute(node, todo)

    def query(self, node: str, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query under ACE's pinned output settings."""
        # ACE's output settings; these queries name tables in public unqualified
        return run_sql(self.dsn(node), (text, params),
                       options=startup_options({"search_path": "public"}))

    def snapshot(self, node: str, table: str) -> list[str]:
        """Every row of ``table`` as text, sorted: equal on two nodes iff the rows are."""
        rows = self.query(node, f'SELECT "rp row"::text FROM {table} "rp row"')  # noqa: S608
        return sorted(r[0] for r in rows)

    def snapshots(self, table: str) -> dict[str, list[str]]:
        return {n: self.snapshot(n, table) for n in NODES}


def diff_table(table: str, **options: Any) -> tuple[Path, dict[str, Any]]:
    """table-diff in process; the diff file and its parsed content."""
    settings = load_settings()
    request = validate_diff_request({"cluster_name": CLUSTER, "table_name": table, **options},
                                    settings)
    path, _ = run_table_diff(request, settings, new_task_id("table-diff"))
    return path, json.loads(path.read_text())


def repair(table: str, diff_file: Path | str, **options: Any) -> dict[str, Any]:
    """table-repair through its core entry point, as a task would call it."""
    raw = {"cluster_name": CLUSTER, "table_name": table, "diff_file": str(diff_file), **options}
    return run_table_repair(raw, load_settings(), new_task_id("table-repair"))


def rerun(table: str, diff_file: Path | str, behavior: str) -> tuple[Path, dict[str, Any]]:
    raw = {"cluster_name": CLUSTER, "table_name": table, "diff_file": str(diff_file),
           "behavior": behavior}
    path, summary = run_table_rerun(raw, load_settings(), new_task_id("table-rerun"))
    return path, summary.to_dict()  # as the new diff file and --json show it


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    def path_after(self, label: str) -> Path | None:
        found = re.search(re.escape(label) + r" written to (\S+\.json)", self.stdout)
        return Path(found.group(1)) if found else None


def ace(*args: str) -> CliRun:
    """Run an ``ace`` command in this process."""
    os.environ.setdefault("ACE_NO_PROGRESS", "1")
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return CliRun(result.exit_code, result.stdout, result.stderr)


def assert_error(run: CliRun, *words: str) -> None:
    """Exit code 2 and one ``ace: error:`` sentence that names ``words``."""
    assert run.code == 2, (run.code, run.stdout, run.stderr)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ace: error: "), run.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


def output_files() -> set[Path]:
    root = Path(os.environ["ACE_OUTPUT_DIR"])
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def diff_sections(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["diffs"]
