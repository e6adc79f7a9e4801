"""A batch that ends after its job finished leaves nothing behind, on real workers.

The job is marked finished (FAILED, what it left removed) while one of its batches
waits on a lock in the middle of its query; the batch then ends. Neither the work
folder nor, on a fleet whose hosts share no disk, a file of it in the shared store
comes back.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from diff_helpers import labelled_items
from fleet_helpers import Fleet, locked, own_fleet, wait_for
from private_fleet import fleet_files, private_fleet

from ace_shared.diff.workdir import WorkDir
from ace_shared.tasks.store import FAILED, TaskStore

TABLE = "late_items"


@pytest.fixture(scope="module")
def items(pg_cluster: Any) -> str:
    return labelled_items(pg_cluster, TABLE, 2000, "id % 97 = 0")


@contextlib.contextmanager
def a_fleet(disk: str, tmp_path: Path, pg_cluster: Any) -> Iterator[Fleet]:
    """One worker, on the output folder every host shares, or on a folder of its own with
    the task store's database as the shared store."""
    if disk == "shared":
        with own_fleet(tmp_path, ("w1",)) as fl:
            yield fl
    else:
        with private_fleet(tmp_path, pg_cluster, "ace_late_batch", names=("w1",)) as fl:
            yield fl


def worker_env(fl: Fleet) -> dict[str, str]:
    """The environment worker w1 runs in (its own output folder on a private fleet)."""
    folder = getattr(fl, "folder", None)
    return {**fl.env, "ACE_OUTPUT_DIR": str(folder("w1"))} if folder else dict(fl.env)


def waiting_on_lock(pg_cluster: Any, node: int) -> int:
    """How many queries on the node wait for a lock (the table's: no other is held)."""
    conn = psycopg2.connect(pg_cluster.admin_dsn(node))  # sees every role's queries
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def finish_as_the_fleet_does(fl: Fleet, task_id: str) -> None:
    """Record the job FAILED and remove what it left, as the worker recording its outcome
    (or a front door cancelling it) does; the batch that runs is not stopped."""
    from ace_workers.fleet import published, tidy

    env = worker_env(fl)
    client = redis.Redis.from_url(env["ACE_BROKER_URL"])
    message = "The job was stopped while a batch of it ran."
    assert TaskStore(env["ACE_DATABASE_URL"]).fail(task_id, message)
    published.outcome(client, task_id, FAILED, None, message)
    with fleet_files(env):
        tidy.after_job(client, task_id, env["ACE_OUTPUT_DIR"])


def left_behind(fl: Fleet, task_id: str) -> tuple[bool, list[str]]:
    """Whether w1 has the job's work folder, and the job's files in the shared store."""
    env = worker_env(fl)
    with fleet_files(env):
        from ace_shared.tasks.filestore import active_store

        folder = WorkDir.for_task(env["ACE_OUTPUT_DIR"], task_id).path.exists()
        store = active_store()
        files = [] if store is None else store.older_than(
            f"work/{task_id}/", datetime.now(timezone.utc) + timedelta(hours=1))
    return folder, files


@pytest.mark.parametrize("disk", ["shared", "private"])
def test_a_rerun_batch_that_ends_after_its_job_finished_leaves_nothing_behind(
        disk: str, pg_cluster: Any, items: str, tmp_path: Path) -> None:
    with a_fleet(disk, tmp_path, pg_cluster) as fl:
        diff = fl.ace("table-diff", "testclus", items)
        assert diff.returncode == 1, diff.stdout + diff.stderr
        diff_file = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
        client = redis.Redis.from_url(fl.env["ACE_BROKER_URL"])
        with locked(pg_cluster, items, 1):  # the rerun's batch fetches its rows, waiting on n2
            sent = fl.ace("table-rerun", "testclus", items, "--diff-file", diff_file,
                          "--no-wait")
            assert sent.returncode == 0, sent.stderr
            task_id = sent.stdout.strip().splitlines()[-1]
            wait_for(lambda: waiting_on_lock(pg_cluster, 1) > 0, 60,
                     "the rerun's batch to wait on the lock")
            assert left_behind(fl, task_id)[0]  # the batch read its keys from the folder
            finish_as_the_fleet_does(fl, task_id)
            assert left_behind(fl, task_id) == (False, [])

        def quiet() -> bool:  # no batch of it runs (holds a lease) any more
            return not [k for k in client.scan_iter(f"ace:lease:{task_id}*")]
        time.sleep(2)
        wait_for(quiet, 60, "the batch to end")
        time.sleep(2)
        assert left_behind(fl, task_id) == (False, [])
        assert TaskStore(fl.env["ACE_DATABASE_URL"]).get(task_id).status == FAILED
        assert "Traceback" not in fl.log("w1")
