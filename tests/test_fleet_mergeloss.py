"""A diff or tree build whose merge was lost with its worker still finishes, at the defaults.

The worker that counts a chord's last batch sends the merge (a Merkle tree
build's finish). Here that worker dies whole at exactly that moment (``dying_worker.py``: it has counted the
batch and not sent the merge), on a fleet of its own where it ran every batch;
then a second worker joins at once, as the rest of a fleet would be there. The job
must finish on its own with the same diff file as in-process, in about the
time a lost merge takes to be noticed (half a minute), sooner than the dead
worker's messages come back to the fleet. Both losses start together, each on a
fleet of its own, so their half-minutes pass together.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import CLUSTER, labelled_items, run_ace
from fleet_helpers import REPO_ROOT, Fleet, scenario_of, started_on_own_fleets, wait_for
from private_fleet import fleet_files

from ace_shared.diff.job import collect_results, saved_job
from ace_shared.tasks.store import COMPLETED, FAILED, RUNNING, TaskStore
from ace_workers.app import VISIBILITY_SECONDS

TABLE = "ml_items"
ITEMS = f"public.{TABLE}"
DYING = [sys.executable, str(REPO_ROOT / "tests" / "dying_worker.py")]


@pytest.fixture(scope="module")
def items(pg_cluster: Any) -> str:
    made = labelled_items(pg_cluster, TABLE, 12000, "id % 2500 = 0")
    assert made == ITEMS
    return made


def _diffs(stdout: str) -> Any:
    match = re.search(r"(?:Diffs|Diff summary) written to (\S+)", stdout)
    assert match, stdout
    return json.loads(Path(match.group(1)).read_text())["diffs"]


@dataclass
class Lost:
    """A job whose merge died with its worker, and the survivor started right after."""

    fleet: Fleet
    task_id: str
    died: float
    expected: Any = None  # the in-process diff
    waiting: subprocess.Popen[str] | None = None  # the user's command, still waiting

    @property
    def store(self) -> TaskStore:
        return TaskStore(self.fleet.env["ACE_DATABASE_URL"])


def _dier(fleet: Fleet) -> subprocess.Popen[bytes]:
    fleet.start_worker("dier", DYING, {"ACE_TEST_DIE_BEFORE_MERGE": "1"})
    return fleet.procs["dier"]


def _lose_a_diff_merge(pg_cluster: Any, fleet: Fleet) -> Lost:
    env = {k: v for k, v in fleet.env.items() if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}
    local = subprocess.run([sys.executable, "-m", "ace_api", "table-diff", "testclus", ITEMS,
                            "--block-rows=1000"], env={**env, "ACE_NO_PROGRESS": "1"},
                           capture_output=True, text=True, timeout=120)
    assert local.returncode == 1, local.stderr
    dier = _dier(fleet)
    submitted = fleet.ace("table-diff", "testclus", ITEMS, "--block-rows=1000", "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    wait_for(lambda: dier.poll() is not None, 120, "the worker to die before the merge")
    died = time.monotonic()
    fleet.procs.pop("dier")
    log = fleet.log("dier")
    with fleet_files(fleet.env):  # the work folder as the workers see it
        job = saved_job(fleet.env["ACE_OUTPUT_DIR"], task_id)
        assert job is not None and len(job.meta["batch_firsts"]) > 3, log[-3000:]
        assert collect_results(job) is not None, log[-3000:]  # every batch done: the merge left
    assert f"ace.merge_diff[{task_id}.merge]" not in log
    lost = Lost(fleet, task_id, died, expected=_diffs(local.stdout))
    assert lost.store.get(task_id).status == RUNNING
    fleet.start_worker("survivor")  # as the rest of a fleet would be there
    return lost


def _lose_a_build_finish(pg_cluster: Any, fleet: Fleet) -> Lost:
    assert run_ace("mtree", "init", CLUSTER).code == 0
    dier = _dier(fleet)
    # the command waits for its build, as a user's would, through the worker's death
    waiting = subprocess.Popen([sys.executable, "-m", "ace_api", "mtree", "build", CLUSTER, ITEMS],
                               env={**fleet.env, "ACE_NO_PROGRESS": "1"}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: dier.poll() is not None, 120,
                 "the worker to die before the build's finish")
        died = time.monotonic()
        fleet.procs.pop("dier")
        store = TaskStore(fleet.env["ACE_DATABASE_URL"])
        (task_id,) = store.unfinished()
        log = fleet.log("dier")
        assert f"ace.mtree_finish[{task_id}.finish]" not in log, log[-3000:]
        assert store.get(task_id).status == RUNNING
    except BaseException:
        waiting.kill()
        raise
    fleet.start_worker("survivor")
    return Lost(fleet, task_id, died, waiting=waiting)


LOSSES = {
    "test_a_merge_lost_with_the_worker_that_counted_the_last_batch_still_comes":
        _lose_a_diff_merge,
    "test_a_tree_build_whose_finish_was_lost_with_its_worker_still_finishes":
        _lose_a_build_finish,
}


@pytest.fixture(scope="module", autouse=True)
def lost_merges(request: pytest.FixtureRequest, pg_cluster: Any, items: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lost | Exception]]:
    """Both losses, each on a fleet of its own: the sweeps that find them run at once."""
    with started_on_own_fleets(request, pg_cluster, tmp_path_factory, LOSSES, "mergeloss",
                               ()) as started:
        yield started


def _finished_by_the_survivor(lost: Lost) -> Any:
    """The job completes, its merge sent again by the workers' sweep before the dead
    worker's messages even come back (the visibility timeout)."""
    wait_for(lambda: lost.store.get(lost.task_id).status in (COMPLETED, FAILED), 240,
             f"task {lost.task_id} to finish")
    took = time.monotonic() - lost.died
    record = lost.store.get(lost.task_id)
    assert record.status == COMPLETED, record.error
    assert took < VISIBILITY_SECONDS, took
    return record


def test_a_merge_lost_with_the_worker_that_counted_the_last_batch_still_comes(
        lost_merges: dict[str, Lost | Exception], request: pytest.FixtureRequest) -> None:
    lost = scenario_of(lost_merges, request)
    record = _finished_by_the_survivor(lost)
    assert json.loads(Path(record.result["diff_file"]).read_text())["diffs"] == lost.expected


def test_a_tree_build_whose_finish_was_lost_with_its_worker_still_finishes(
        lost_merges: dict[str, Lost | Exception], request: pytest.FixtureRequest) -> None:
    lost = scenario_of(lost_merges, request)
    assert lost.waiting is not None
    try:
        _finished_by_the_survivor(lost)
        out, err = lost.waiting.communicate(timeout=60)
    finally:
        lost.waiting.kill()
    assert lost.waiting.returncode == 0, out + err
    # the tree is ready and tells what a full diff tells
    tree = run_ace("mtree", "table-diff", CLUSTER, ITEMS)
    full = run_ace("table-diff", CLUSTER, ITEMS)
    assert tree.code == full.code == 1, (tree.stdout, tree.stderr)
    assert tree.diff()["diffs"] == full.diff()["diffs"]
    assert run_ace("mtree", "teardown", CLUSTER, ITEMS).code == 0
