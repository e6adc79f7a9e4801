"""The types are checked, not only written: mypy passes on the three packages and on the
tests' helper modules.

The settings are mypy's, in pyproject.toml's ``[tool.mypy]``: strict for the core
(``ace_shared``), checked for the tasks and the front doors. These tests run mypy on
the code as it is, and on a copy with one wrong annotation in each strictness, to show
that the check would catch it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ace_api", "ace_workers", "ace_shared")


HELPERS = sorted(p.name for p in (REPO / "tests").glob("*.py")
                 if not p.name.startswith(("test_", "conftest")))


def mypy(root: Path, *files: str, path: str = "") -> subprocess.CompletedProcess[str]:
    """Run mypy with the project's settings in ``root`` (its cache beside the checkout's)."""
    cache = REPO / ".ace-local" / "mypy-cache"
    env = {**os.environ, "PYTHONPATH": str(root), "MYPYPATH": path}
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *files],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_code_type_checks() -> None:
    run = mypy(REPO)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_tests_helpers_are_typed() -> None:
    """Every def of the modules the tests import (fixtures, fleets, SQL on a node) is typed;
    the packages they reach are read, not reported on again."""
    assert {"fleet_helpers.py", "diff_helpers.py", "node_sql.py"} <= set(HELPERS)
    run = mypy(REPO, "--disallow-untyped-defs", "--disallow-incomplete-defs",
               "--follow-imports=silent", *(f"tests/{name}" for name in HELPERS),
               path=f"{REPO / 'tests'}:{REPO / 'deploy'}")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(("module", "text", "error"), [
    ("ace_shared/wrong.py", "def half(n: int) -> int:\n    return n / 2\n",
     "Incompatible return value type"),
    ("ace_shared/untyped.py", "def half(n):\n    return n // 2\n",
     "Function is missing a type annotation"),
    ("ace_workers/wrong.py", "def half(n: int) -> str:\n    return n // 2\n",
     "Incompatible return value type"),
])
def test_a_wrong_type_breaks_the_check(tmp_path: Path, module: str, text: str,
                                       error: str) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(f'"""A module with a type error."""\n\n{text}')
    run = mypy(tmp_path, module)
    assert run.returncode == 1
    assert error in run.stdout, run.stdout + run.stderr
