"""Chords whose merge never came: every batch recorded, the job unfinished, no merge anywhere.

A diff, a rerun or a Merkle tree build on the fleet is a Celery chord: the
worker that counts the last batch sends the merge (for a build, the
``ace.mtree_finish`` that builds the inner levels and marks the tree ready).
A worker that dies between counting and sending (its host gone) leaves a job
whose batches are all done and whose merge no one will send: depending on
Celery's version, the redelivered copy of that batch may send it or may find
the chord already counted and send nothing. (Celery 5.7 sends it once the
batch's message comes back, after the visibility timeout and the batch done
again; older versions allowed by ACE's requirements never do.) So ACE does not
rely on it. Every worker's sweep (:mod:`ace_workers.fleet.sweep`) also looks at the
unfinished diff, rerun and build jobs: one whose every batch has recorded its
result in the work folder at least :data:`MERGE_GRACE_SECONDS` ago, and whose
merge task was never handed to the broker, gets its merge sent again under the
merge's own task id.

A merge handed to the broker is not lost, however long it waits: it is queued
behind other work (40 diffs on two workers keep a merge waiting for minutes),
or taken by a worker, which Redis gives back to the fleet should that worker
die (the visibility timeout). So every merge's message, once the broker has
it, is noted in its job's hash of marks (:func:`note_sent`, on Celery's
``after_task_publish``, whoever sends it: the chord, a retry, this watch). Only
a job whose merge was never noted there, and that neither runs (no lease) nor
has finished, lost its merge with the worker that was to send it.

Sending it twice is harmless: a copy of a merge that is running waits for its
lease, one that finished changes nothing (its done mark), and a merge of a
finished job only tidies its folder. One worker of the fleet sends it per
grace period (a Redis key taken with NX).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ace_shared.diff.job import load_job
from ace_shared.diff.workdir import WorkDir
from ace_shared.mtree.buildjob import BuildJob
from ace_shared.rerun.plan import RerunPlan
from ace_shared.tasks import ids
from ace_shared.tasks.ids import subtask_id
from ace_workers import names
from ace_workers.fleet import runtime
from ace_workers.fleet.leases import done_in, lease_key, mark_sent, was_sent
from ace_workers.fleet.redisclient import RedisClient

# How long after its last batch's record a job's merge must have begun. A merge is
# sent the moment the last batch is counted, so this only needs to outlast a merge
# queued behind other work; shorter than the visibility timeout (45 s), so a lost
# merge is sent before even the dead worker's own messages come back.
MERGE_GRACE_SECONDS = 30

log = logging.getLogger(__name__)

# The tasks a chord sends once its batches are done (its body).
MERGE_TASKS = frozenset({names.MERGE_DIFF, names.MERGE_RERUN, names.MTREE_FINISH})


def note_sent(sender: str | None = None, headers: dict[str, Any] | None = None,
              **_: Any) -> None:
    """Celery's ``after_task_publish``: a merge's message is with the broker now."""
    task_id = (headers or {}).get("id")
    if sender not in MERGE_TASKS or not task_id:
        return
    try:
        mark_sent(runtime.redis(), task_id)
    except Exception as exc:  # the watch may then send it once more: harmless
        log.warning("could not note that merge %s was queued: %s", task_id, exc)


@dataclass(frozen=True)
class ChordJob:
    """What the watch needs of a job's plan: where its batches record, and its merge.

    ``merge_id`` is the merge's task id, which its lease and done mark are kept
    under; ``errback`` is the task that fails the job if the merge fails, as
    the chord's own error callback would.
    """

    work_dir: str
    firsts: tuple[int, ...]
    merge_task: str
    merge_id: str
    errback: str


def chord_job(output_dir: str | Path, task_id: str) -> ChordJob | None:
    """The job's chord as its saved plan describes it; None if it has none (yet, or at all)."""
    work = WorkDir.for_task(output_dir, task_id)
    try:
        if work.has_diff_plan():
            job = load_job(work.path)
            return ChordJob(str(work.path), tuple(job.meta["batch_firsts"]), names.MERGE_DIFF,
                            subtask_id(task_id, ids.MERGE), names.DIFF_FAILED)
        if work.has_rerun_plan():
            plan = RerunPlan.load(work.path)
            if plan.meta.get("behavior") == "hostdb":  # one task, no chord
                return None
            return ChordJob(str(work.path), tuple(plan.parts), names.MERGE_RERUN,
                            subtask_id(task_id, ids.MERGE), names.DIFF_FAILED)
        if work.has_build_plan():
            build = BuildJob.from_dict(work.read_build_plan())
            return ChordJob(str(work.path), tuple(b[0].index for b in build.batches),
                            names.MTREE_FINISH, subtask_id(task_id, ids.FINISH), names.MTREE_FAILED)
    except (OSError, ValueError, KeyError):  # being written or removed right now
        return None
    return None


SendMerge = Callable[[ChordJob, str], None]  # (the chord, its job's id)


class MergeWatch:
    """Per worker process: the plans of the unfinished jobs it has looked at, read once.

    ``lookup`` finds a job's chord from its plan in the output folder
    (:func:`chord_job`).
    """

    def __init__(self, grace_seconds: float = MERGE_GRACE_SECONDS,
                 lookup: Callable[[str | Path, str], ChordJob | None] = chord_job) -> None:
        self.grace = grace_seconds
        self.lookup = lookup
        self._jobs: dict[str, ChordJob | None] = {}

    def check(self, client: RedisClient, output_dir: str | Path, unfinished: Iterable[str],
              send: SendMerge, now: float | None = None) -> list[str]:
        """Send the merge of every unfinished job that waits for one; their ids."""
        now = time.time() if now is None else now
        current = list(unfinished)
        self._jobs = {t: self._jobs[t] for t in current if t in self._jobs}
        sent = []
        for task_id in current:
            if task_id not in self._jobs or self._jobs[task_id] is None:
                self._jobs[task_id] = self.lookup(output_dir, task_id)
            job = self._jobs[task_id]
            if job is None:
                continue
            recorded = WorkDir(job.work_dir).batches_recorded_at(job.firsts)
            if recorded is None or now - recorded < self.grace:
                continue
            merge_id = job.merge_id
            if client.exists(lease_key(merge_id)) or done_in(client, merge_id) is not None:
                continue  # running now, or finished (the job's row is about to say so)
            if was_sent(client, merge_id):
                continue  # with the broker: queued behind other work, or being run
            if not client.set(f"ace:merge-resent:{task_id}", "1", nx=True,
                              ex=int(self.grace)):
                continue  # another worker sent it in this period
            log.warning("job %s: every batch was done %.0f s ago and its merge never came "
                        "(its worker died?); sending the merge again", task_id, now - recorded)
            send(job, task_id)
            sent.append(task_id)
        return sent
