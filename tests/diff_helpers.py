"""Shared pieces of the table-diff tests: run ``ace``, read diff files, set up tables.

Tables are created on each node of the ``pg_cluster`` fixture through plain
psycopg2 sessions (the nodes' own server time zones apply, as for any client),
and the diff is run either through the real CLI in a subprocess or through the
in-process runner the CLI itself uses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from node_sql import Statement, run_sql

from ace_shared.config import load_settings
from ace_shared.diff.local import run_table_diff
from ace_shared.diff.request import validate_diff_request
from ace_shared.diff.tuning import DensityHints, DiffTuning
from ace_shared.nodes.connection import startup_options
from ace_shared.tasks.ids import new_task_id

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "testclus"
NODES = ("n1", "n2", "n3")


@dataclass
class AceRun:
    """The outcome of one ``ace`` command: exit code, output and the diff file it named."""

    code: int
    stdout: str
    stderr: str

    @property
    def diff_path(self) -> Path | None:
        # sentences name it; --quiet prints the path alone
        found = re.search(r"^(?:(?:Diffs|Diff summary) written to )?(\S+\.json)$", self.stdout,
                          re.M)
        return Path(found.group(1)) if found else None

    def diff(self) -> dict[str, Any]:
        assert self.diff_path is not None, f"no diff file named in: {self.stdout!r}"
        return json.loads(self.diff_path.read_text())


def run_ace(*args: str, env: dict[str, str] | None = None, fresh_process: bool = False,
            ) -> AceRun:
    """Run ``ace <args>`` as a user would, in a new process or through click in this one.

    Both run the real command line; a new process also proves the console entry
    point and exit status, the in-process run saves the interpreter start-up.
    """
    if fresh_process:
        full_env = {**os.environ, "ACE_NO_PROGRESS": "1", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "ace_api", *args], capture_output=True,
                              text=True, env=full_env, cwd=REPO_ROOT, timeout=120)
        return AceRun(proc.returncode, proc.stdout, proc.stderr)
    from click.testing import CliRunner

    from ace_api.cli.main import main
    runner = CliRunner(env={"ACE_NO_PROGRESS": "1", **(env or {})}, catch_exceptions=False)
    result = runner.invoke(main, list(args))
    return AceRun(result.exit_code, result.stdout, result.stderr)


def mtree_init(cluster: str = CLUSTER) -> AceRun:
    """``ace mtree init`` as docs/security.md says: first with the cluster file's login (the
    schema ``ace_mtree`` is then ACE's), then with the admin cluster file, whose superuser
    adds the event trigger that marks trees stale on ``ALTER TABLE``."""
    first = run_ace("mtree", "init", cluster)
    if first.code != 0:
        return first
    return run_ace("mtree", "init", cluster,
                   env={"ACE_CLUSTER_DIR": os.environ["ACE_TEST_ADMIN_CLUSTER_DIR"]})


def table_diff(table: str, *options: str, env: dict[str, str] | None = None,
               fresh_process: bool = False) -> AceRun:
    return run_ace("table-diff", CLUSTER, table, *options, env=env, fresh_process=fresh_process)


def diff_in_process(table: str, tuning: DiffTuning | None = None,
                    hints: DensityHints | None = None,
                    **options: Any) -> tuple[Path, dict[str, Any]]:
    """Run a table diff through the in-process runner; returns the diff file and its data.
    ``hints``, when given, are the job's, and tell what steps its differs took."""
    settings = load_settings()
    raw = {"cluster_name": CLUSTER, "table_name": table, **options}
    request = validate_diff_request(raw, settings)
    path, _summary = run_table_diff(request, settings, new_task_id("table-diff"), tuning=tuning,
                                  hints=hints)
    return path, json.loads(path.read_text())


def output_files() -> set[Path]:
    """Every file and folder under ``$ACE_OUTPUT_DIR`` (to prove an error wrote nothing)."""
    root = Path(os.environ["ACE_OUTPUT_DIR"])
    return set(root.rglob("*")) if root.exists() else set()


def execute(dsn: str, statements: Iterable[Statement]) -> None:
    """Run statements on one node, in one transaction."""
    run_sql(dsn, *statements)


def query(dsn: str, text: str, params: Sequence[Any] = (), *, pinned: bool = False,
          ) -> list[tuple[Any, ...]]:
    """Rows of a query on one node; ``pinned`` uses ACE's output settings (UTC, ISO, ...)."""
    # the output settings; the tests' own queries name tables in public unqualified
    options = startup_options({"search_path": "public"}) if pinned else None
    return run_sql(dsn, (text, params), options=options)


T = TypeVar("T")


def settled(read: Callable[[], T]) -> T:
    """``read()`` (of statistics such as ``pg_stat_all_indexes``) once two reads 0.6 s apart
    agree: a backend's counts arrive after it ends, not when its client disconnects."""
    last, seen = None, read()
    while seen != last:
        time.sleep(0.6)
        last, seen = seen, read()
    return seen


def on_every_node(cluster: Any, statements: Iterable[Statement]) -> None:
    todo = list(statements)
    for i in range(len(NODES)):
        execute(cluster.node_dsn(i), todo)


def as_admin_on_every_node(cluster: Any,
                           statements: Iterable[str | tuple[str, Sequence[Any]]]) -> None:
    """Run statements as the postgres superuser in ACE's database on every node.

    For fixture set-up the cluster file's login may not do, since it is not a
    superuser: creating and dropping roles, granting predefined roles.
    """
    todo = list(statements)
    for i in range(len(NODES)):
        execute(cluster.admin_dsn(i, cluster.dbname), todo)


def labelled_items(cluster: Any, table: str, rows: int, changed_on_n2: str) -> str:
    """``public.<table>`` (id, label) with the same ``rows`` rows on every node, but the
    labels of the rows matching ``changed_on_n2`` (a condition on ``id``) changed on n2."""
    on_every_node(cluster, [f"DROP TABLE IF EXISTS {table}",
                            f"CREATE TABLE {table} (id int PRIMARY KEY, label text)",
                            f"INSERT INTO {table} SELECT g, 'item ' || g "
                            f"FROM generate_series(1, {rows}) g"])
    execute(cluster.node_dsn(1), [f"UPDATE {table} SET label = 'changed' WHERE {changed_on_n2}"])
    # every node's catalog estimates the same rows now, not whenever autovacuum gets to it:
    # a diff then plans on n1, the first of equal nodes, in every run
    on_every_node(cluster, [f"ANALYZE {table}"])
    return f"public.{table}"


META_FIELDS = ("_ace_commit_ts", "_ace_origin")


def pair_rows(diff: dict[str, Any], pair: str, node: str,
              meta: bool = False) -> list[dict[str, Any]]:
    """One side's rows of a pair, without their provenance fields unless ``meta``."""
    rows = diff["diffs"].get(pair, {}).get(node, [])
    if meta:
        return rows
    return [{k: v for k, v in r.items() if k not in META_FIELDS} for r in rows]


def reported_keys(diff: dict[str, Any], column: str = "id") -> dict[str, set[str]]:
    """For every pair in the file, the key values reported on either side."""
    out: dict[str, set[str]] = {}
    for pair, sides in diff["diffs"].items():
        out[pair] = {row[column] for rows in sides.values() for row in rows}
    return out


def assert_one_error_line(run: AceRun, *words: str) -> None:
    """Exit code 2 and exactly one ``ace: error:`` sentence naming ``words``, nothing on stdout."""
    assert run.code == 2, (run.code, run.stdout, run.stderr)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("ace: error: "), run.stderr
    assert "Traceback" not in run.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert run.diff_path is None


LABELS = ["a", "b", "c", "d", "e", "f"]
ENUM_TABLE_ROWS = 6000


def enum_keyed_table(cluster: Any, name: str, orders: list[list[str]]) -> None:
    """``name`` keyed by (enum, int); the enum's labels are in ``orders[i]`` order on node i."""
    for i, order in enumerate(orders):
        labels = ", ".join(f"'{x}'" for x in order)
        execute(cluster.node_dsn(i), [
            f"DROP TABLE IF EXISTS {name}",
            f"DROP TYPE IF EXISTS {name}_k",
            f"CREATE TYPE {name}_k AS ENUM ({labels})",
            f"CREATE TABLE {name} (k {name}_k, i int, v text, PRIMARY KEY (k, i))",
            # the same rows everywhere: row g has label LABELS[g % 6]
            (f"INSERT INTO {name} SELECT (%s::text[])[1 + mod(g, 6)]::{name}_k, g, 'x' "  # noqa: S608
             f"FROM generate_series(1, {ENUM_TABLE_ROWS}) g", (LABELS,)),
        ])
    execute(cluster.node_dsn(1), [f"UPDATE {name} SET v = 'y' WHERE i IN (5, 3001, 5999)"])
