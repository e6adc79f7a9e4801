"""The packages keep their layers: front door -> task -> core, and inside the core, upward only.

The contracts are import-linter's, in pyproject.toml's ``[tool.importlinter]``;
these tests run its ``lint-imports`` on the code as it is, and on a copy with one
import that breaks each contract, to show that the check would catch it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("ace_api", "ace_workers", "ace_shared")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the packages under ``root`` (only those: not the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_code_keeps_its_layers() -> None:
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("ace_shared/difffile/upward.py", "from ace_shared.diff import job",
     "Inside the core, each capability builds only on those below it BROKEN"),
    ("ace_shared/nodes/prompt.py", "import click",
     "The core imports no front door, no task and no framework BROKEN"),
    ("ace_shared/tasks/queue.py", "from ace_workers import app",
     "The core imports no front door, no task and no framework BROKEN"),
    ("ace_workers/menu.py", "from ace_api.cli import main",
     "Tasks import no front door BROKEN"),
    ("ace_workers/fleet/backdoor.py", "from ace_workers.retention import retention",
     "The fleet's machinery imports no task and not the app BROKEN"),
    ("ace_workers/fleet/backdoor.py", "from ace_workers.app import get_app",
     "The fleet's machinery imports no task and not the app BROKEN"),
])
def test_an_upward_import_breaks_the_check(tmp_path: Path, module: str, line: str,
                                           broken: str) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(f'"""An import against the layers."""\n\n{line}\n')
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert broken in run.stdout, run.stdout + run.stderr
