"""Sub-task ids and task names each have one home: ``tasks/ids.py`` and ``ace_workers/names.py``.

A subtask's id carries its job's id, so that whatever fails it (a worker death counted
too often, a message refused as unsigned) fails the right job; and a task sent by name
(the merge watch, the beat schedule, the fleet client) must name a registered task.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ace_shared.tasks import ids
from ace_shared.tasks.ids import is_task_id, job_of, new_task_id, subtask_id

REPO = Path(__file__).resolve().parent.parent


def test_a_subtask_id_is_the_job_id_a_dot_and_its_kind() -> None:
    job = "td_20240315_123456_x7k2"
    assert subtask_id(job, ids.MERGE) == "td_20240315_123456_x7k2.merge"
    assert subtask_id(job, ids.DIFF_BATCH, 12) == "td_20240315_123456_x7k2.b000012"
    assert subtask_id(job, ids.RERUN_KEYS, 0) == "td_20240315_123456_x7k2.k000000"


@pytest.mark.parametrize("kind", [ids.MERGE, ids.FINISH, ids.COLLECT])
def test_every_subtask_names_its_job(kind: str) -> None:
    job = new_task_id("mtree")
    assert is_task_id(job)
    assert job_of(subtask_id(job, kind)) == job
    assert job_of(subtask_id(job, ids.MTREE_HASH, 123456)) == job
    assert job_of(job) == job  # a job's first task has the job's own id


def test_every_task_name_is_registered_and_every_task_is_named_once() -> None:
    code = (
        "import json\n"
        "from ace_workers.app import get_app\n"
        "from ace_workers import names\n"
        "app = get_app()\n"
        "app.loader.import_default_modules()\n"
        "registered = sorted(n for n in app.tasks if n.startswith('ace.'))\n"
        "declared = sorted(v for k, v in vars(names).items() if k.isupper() and isinstance(v, str))\n"
        "print(json.dumps([registered, declared, sorted(names.BY_COMMAND.values())]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)
    registered, declared, submitted = json.loads(run.stdout.splitlines()[-1])
    assert registered == declared
    assert set(submitted) <= set(declared)
