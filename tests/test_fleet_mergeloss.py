"""A diff or tree build whose merge was lost with its worker still finishes, at the defaults.

The worker that counts a chord's last batch sends the merge (a Merkle tree
build's finish). Here that worker dies whole at exactly that moment (``dying_worker.py``: it has counted the
batch and not sent the merge), on a fleet of its own where it ran every batch;
then a second worker joins, as the rest of a fleet would be there. The job
must finish on its own with the same diff file as in-process, in about the
time a lost merge takes to be noticed (half a minute), sooner than the dead
worker's messages come back to the fleet.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import CLUSTER, labelled_items, run_ace
from fleet_helpers import REPO_ROOT, Fleet, RedisServer, fleet_env, wait_for

from ace_shared.diff.job import collect_results, saved_job
from ace_shared.tasks.store import COMPLETED, FAILED, RUNNING, TaskStore
from ace_workers.app import VISIBILITY_SECONDS

TABLE = "ml_items"
DYING = [sys.executable, str(REPO_ROOT / "tests" / "dying_worker.py")]


@pytest.fixture(scope="module")
def items(pg_cluster: Any) -> str:
    return labelled_items(pg_cluster, TABLE, 12000, "id % 2500 = 0")


@pytest.fixture()
def lone_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A Redis of its own and no worker yet: the test starts them."""
    redis = RedisServer(tmp_path)
    redis.start()
    fleet = Fleet(tmp_path, fleet_env(redis, tmp_path), names=())
    try:
        yield fleet
    finally:
        fleet.stop()
        redis.stop()


def _diffs(stdout: str) -> Any:
    match = re.search(r"(?:Diffs|Diff summary) written to (\S+)", stdout)
    assert match, stdout
    return json.loads(Path(match.group(1)).read_text())["diffs"]


def _finished_by_a_survivor(fleet: Fleet, store: TaskStore, task_id: str, died: float) -> Any:
    """Start a second worker; the job must complete, its merge sent again by the workers'
    sweep before the dead worker's messages even come back (the visibility timeout)."""
    fleet.start_worker("survivor")
    wait_for(lambda: store.get(task_id).status in (COMPLETED, FAILED), 240,
             f"task {task_id} to finish")
    took = time.monotonic() - died
    record = store.get(task_id)
    assert record.status == COMPLETED, record.error
    assert took < VISIBILITY_SECONDS, took
    return record


def test_a_merge_lost_with_the_worker_that_counted_the_last_batch_still_comes(
        lone_fleet: Fleet, items: str) -> None:
    env = {k: v for k, v in lone_fleet.env.items()
           if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}
    local = subprocess.run([sys.executable, "-m", "ace_api", "table-diff", "testclus", items,
                            "--block-rows=1000"], env={**env, "ACE_NO_PROGRESS": "1"},
                           capture_output=True, text=True, timeout=120)
    assert local.returncode == 1, local.stderr

    lone_fleet.start_worker("dier", DYING, {"ACE_TEST_DIE_BEFORE_MERGE": "1"})
    dier = lone_fleet.procs["dier"]
    submitted = lone_fleet.ace("table-diff", "testclus", items, "--block-rows=1000",
                               "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    wait_for(lambda: dier.poll() is not None, 120, "the worker to die before the merge")
    died = time.monotonic()
    lone_fleet.procs.pop("dier")
    store = TaskStore(lone_fleet.env["ACE_DATABASE_URL"])
    log = lone_fleet.log("dier")
    job = saved_job(lone_fleet.env["ACE_OUTPUT_DIR"], task_id)
    assert job is not None and len(job.meta["batch_firsts"]) > 3, log[-3000:]
    assert collect_results(job) is not None, log[-3000:]  # every batch done: only the merge left
    assert f"ace.merge_diff[{task_id}.merge]" not in log
    assert store.get(task_id).status == RUNNING

    record = _finished_by_a_survivor(lone_fleet, store, task_id, died)
    assert json.loads(Path(record.result["diff_file"]).read_text())["diffs"] == \
        _diffs(local.stdout)


def test_a_tree_build_whose_finish_was_lost_with_its_worker_still_finishes(
        lone_fleet: Fleet, items: str) -> None:
    assert run_ace("mtree", "init", CLUSTER).code == 0
    lone_fleet.start_worker("dier", DYING, {"ACE_TEST_DIE_BEFORE_MERGE": "1"})
    dier = lone_fleet.procs["dier"]
    # the command waits for its build, as a user's would, through the worker's death
    waiting = subprocess.Popen([sys.executable, "-m", "ace_api", "mtree", "build", CLUSTER, items],
                               env={**lone_fleet.env, "ACE_NO_PROGRESS": "1"}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: dier.poll() is not None, 120,
                 "the worker to die before the build's finish")
    except BaseException:
        waiting.kill()
        raise
    died = time.monotonic()
    lone_fleet.procs.pop("dier")
    store = TaskStore(lone_fleet.env["ACE_DATABASE_URL"])
    (task_id,) = store.unfinished()
    log = lone_fleet.log("dier")
    assert f"ace.mtree_finish[{task_id}.finish]" not in log, log[-3000:]
    assert store.get(task_id).status == RUNNING

    _finished_by_a_survivor(lone_fleet, store, task_id, died)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out + err
    # the tree is ready and tells what a full diff tells
    tree = run_ace("mtree", "table-diff", CLUSTER, items)
    full = run_ace("table-diff", CLUSTER, items)
    assert tree.code == full.code == 1, (tree.stdout, tree.stderr)
    assert tree.diff()["diffs"] == full.diff()["diffs"]
    assert run_ace("mtree", "teardown", CLUSTER, items).code == 0
