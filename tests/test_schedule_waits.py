"""A scheduled recheck due later than Redis's visibility timeout waits without being handed round.

A worker holds a message waiting for its countdown unacknowledged; Redis
gives it to another worker once the visibility timeout (45 s) has passed, and
again every 45 s, each copy held until the countdown ends. So ``rerun_after``
is waited for in countdowns of at most half a minute: here a recheck due in
75 s is never held by the fleet as more than one message, and still runs
once, after its delay, with the right verdict.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from diff_helpers import labelled_items
from fleet_helpers import Fleet, own_fleet, send_as_beat

from ace_shared.tasks.store import COMPLETED, TaskRecord, TaskStore
from ace_workers.base import MAX_COUNTDOWN_SECONDS

TABLE = "sw_items"
RERUN_AFTER = 75


@pytest.fixture(scope="module")
def items(pg_cluster: Any) -> str:
    return labelled_items(pg_cluster, TABLE, 500, "id IN (7, 70)")


@pytest.fixture()
def fleet(tmp_path: Path, pg_cluster: Any) -> Iterator[Fleet]:
    with own_fleet(tmp_path, ("sw1",), pg_cluster=pg_cluster) as fleet:
        yield fleet


def _held(app: Celery) -> list[tuple[str, float]]:
    """The recheck messages the workers hold for a countdown: (task id, seconds to go)."""
    answers = app.control.inspect(timeout=2).scheduled() or {}
    now = datetime.now(timezone.utc)
    return [(entry["request"]["id"],
             (datetime.fromisoformat(entry["eta"]) - now).total_seconds())
            for entries in answers.values() for entry in entries
            if entry["request"].get("name") == "ace.scheduled_recheck"]


def test_a_recheck_due_after_the_visibility_timeout_is_one_message_at_a_time(
        fleet: Fleet, items: str) -> None:
    app = Celery(broker=fleet.env["ACE_BROKER_URL"])  # only asks the workers what they hold
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    send_as_beat(fleet.env, "ace.scheduled_diff", [
        "sw_job", {"cluster_name": "testclus", "table_name": items}, "table-diff",
        RERUN_AFTER])
    sent = time.time()

    def verdict() -> TaskRecord | None:
        return next((r for r in store.recent(20) if r.task_type == "scheduled-recheck"
                     and r.status == COMPLETED), None)
    copies: Counter[str] = Counter()
    most_at_once, longest_wait = 0, 0.0
    while verdict() is None:
        assert time.time() - sent < RERUN_AFTER + 90, "no verdict"
        held = _held(app)
        most_at_once = max(most_at_once, len(held))
        longest_wait = max([longest_wait, *(wait for _, wait in held)])
        copies.update(task_id for task_id, _ in held)
        time.sleep(2)
    assert len(copies) == 1, copies  # one recheck, however long it waited
    assert most_at_once == 1  # never a second copy of it held meanwhile
    assert longest_wait <= MAX_COUNTDOWN_SECONDS + 1
    record = verdict()
    assert record is not None
    first = store.get(record.options["rerun_of"])
    assert first is not None and first.requested_by == "scheduler:sw_job"
    assert (record.submitted_at - first.submitted_at).total_seconds() >= RERUN_AFTER - 1
    assert record.result["summary"]["persisted"] is True
    assert record.result["summary"]["remaining_rows"] == 2
