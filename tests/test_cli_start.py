"""``ace`` starts quickly: a command loads only the code it runs.

A re-check of one changed row does a few hundredths of a second of work, so the
interpreter's start and imports are most of what a user waits for. Each command
is run here as the ``ace`` program runs it (its entry point, in a new process),
and the modules it loaded are read back: a local diff loads no Celery, Flask or
other fleet and API machinery, no other command's code and no report renderer
it was not asked for; ``--help`` loads not even the database driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from diff_helpers import CLUSTER, execute, mtree_init, on_every_node, run_ace

from ace_api.cli.main import LAZY_COMMANDS, main

# the ``ace`` program, with the names of the modules it loaded written to a file at exit
_ACE_WITH_MODULES = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "ace"
from ace_api.cli import run
run()
"""

# the fleet's and the API's machinery, and the filter grammar: never for a plain local run
FRAMEWORKS = ("celery", "kombu", "billiard", "redis", "flask", "flask_restx", "werkzeug",
              "jinja2", "gunicorn", "sqlalchemy", "pglast", "jsonschema", "ace_workers",
              "ace_api.rest", "ace_api.cli.fleet", "ace_api.cli.fetch")
# what other commands run, and the reports nobody asked for
OTHER_COMMANDS = ("ace_shared.repair", "ace_shared.rerun", "ace_shared.schemadiff",
                  "ace_shared.repsetdiff", "ace_shared.spockdiff", "ace_shared.autorepair",
                  "ace_shared.tasks.store", "ace_api.cli.repair", "ace_api.cli.checks",
                  "ace_api.cli.tasks", "ace_api.cli.cluster")
RENDERERS = ("ace_shared.difffile.htmlreport", "ace_shared.difffile.csvreport")
TABLE = "public.start_t"


def loaded_by(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """Run ``ace <args>`` in a new process; its exit code and every module it loaded."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "ACE_NO_PROGRESS": "1"}
    env.pop("ACE_BROKER_URL", None)
    proc = subprocess.run([sys.executable, "-c", _ACE_WITH_MODULES, str(out), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, set(json.loads(out.read_text()))


def found(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` (each a package or module name) among ``modules``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.fixture(scope="module")
def one_changed_row(pg_cluster: Any) -> str:
    """A small table with one row that differs on n2, and its Merkle tree built."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS start_t",
        "CREATE TABLE start_t (id int PRIMARY KEY, v text)",
        "INSERT INTO start_t SELECT g, 'v' || g FROM generate_series(1, 500) g",
    ])
    assert mtree_init().code == 0
    built = run_ace("mtree", "build", CLUSTER, TABLE)
    assert built.code == 0, built.stderr
    execute(pg_cluster.node_dsn(1), ["UPDATE start_t SET v = 'changed' WHERE id = 7"])
    return TABLE


@pytest.mark.parametrize("words", [["table-diff"], ["mtree", "table-diff"]])
def test_a_local_diff_loads_only_its_own_code(one_changed_row: str, tmp_path: Path,
                                              words: list[str]) -> None:
    code, modules = loaded_by(tmp_path, *words, CLUSTER, one_changed_row)
    assert code == 1  # the run is real: it found the changed row
    assert "psycopg2" in modules
    assert found(modules, FRAMEWORKS) == []
    assert found(modules, OTHER_COMMANDS) == []
    assert found(modules, RENDERERS) == []


def test_a_report_loads_its_renderer_only(one_changed_row: str, tmp_path: Path) -> None:
    _, modules = loaded_by(tmp_path, "table-diff", CLUSTER, one_changed_row, "--output", "html")
    assert found(modules, RENDERERS) == ["ace_shared.difffile.htmlreport"]
    assert found(modules, FRAMEWORKS) == []


@pytest.mark.parametrize("words", [[], ["table-diff"], ["mtree", "table-diff"]])
def test_help_loads_no_database_driver(tmp_path: Path, words: list[str]) -> None:
    code, modules = loaded_by(tmp_path, *words, "--help")
    assert code == 0
    assert found(modules, ("psycopg2", *FRAMEWORKS)) == []
    if words:  # one command's help: none of the others' code either
        assert found(modules, OTHER_COMMANDS) == []


def test_every_command_is_listed_and_found_by_its_own_name() -> None:
    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0, listing.output
    for name in LAZY_COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.name == name
        assert f"\n  {name} " in listing.output
