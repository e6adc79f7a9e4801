"""A table diff as one pipeline: check and plan, cut into batches, run a batch, merge.

Both executors drive these steps and only these: the in-process runner
(:mod:`ace_shared.diff.local`) runs the batches on a thread pool, the fleet
(``ace_workers.diff``) as one Celery subtask each. Who runs the batches is
the only difference, so both give the same diff file for the same data.

Between the steps a job travels as a small dict (:meth:`DiffJob.to_dict`),
kept in its work folder (:mod:`~ace_shared.diff.workdir`), so that any worker
can take the next step, and a planning step redelivered after its worker
died launches the same batches again instead of a new plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.budget import DiffBudget
from ace_shared.diff.differ import diff_batch
from ace_shared.diff.merge import merge_diff, partials_view
from ace_shared.diff.partials import PartialsView
from ace_shared.diff.plan import prepare_diff
from ace_shared.diff.ranges import KeyRange, batches, split_by_sizes, tapered_sizes
from ace_shared.diff.request import DiffRequest, DiffSpec
from ace_shared.diff.summary import DiffSummary
from ace_shared.diff.tuning import DensityHints, DiffTuning
from ace_shared.diff.workdir import BatchResult, WorkDir
from ace_shared.nodes.sessions import NodeSessions

OnRangeDone = Callable[[str, int], None]


@dataclass
class DiffJob:
    """A planned diff: what workers need (spec, batches) and what the merge needs (meta).

    ``meta`` holds ``executor``, ``max_cpu_ratio``, ``output``, ``started_at``,
    ``ranges_total`` and ``batch_firsts`` (each batch's first range: the batch's
    name in the work folder).
    """

    spec: DiffSpec
    batches: list[list[KeyRange]]
    meta: dict[str, Any]

    @property
    def work(self) -> WorkDir:
        return WorkDir(self.spec.work_dir)

    @property
    def ranges_total(self) -> int:
        return int(self.meta["ranges_total"])

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "meta": self.meta,
                "batches": [[r.to_json() for r in group] for group in self.batches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffJob:
        return cls(DiffSpec.from_dict(d["spec"]), [[KeyRange.from_json(r) for r in group]
                                                   for group in d["batches"]], d["meta"])


def cut_batches(ranges: list[KeyRange], batch_size: int | None, slots: int | None,
                tasks_per_process: int) -> list[list[KeyRange]]:
    """Batches of ``batch_size`` ranges when one is asked for, or when there is no fleet
    (``slots`` None: one range each); otherwise a few tapering batches per worker process.
    """
    if batch_size or slots is None:
        return batches(ranges, batch_size or 1)
    return split_by_sizes(ranges, tapered_sizes(len(ranges), slots, tasks_per_process))


def plan_job(request: DiffRequest, settings: Settings, task_id: str, sessions: NodeSessions,
             executor: str, fleet_slots: Callable[[], int] | None = None,
             tuning: DiffTuning | None = None) -> DiffJob:
    """Check the table and plan its ranges on the sessions' nodes, then cut the batches.

    ``tuning`` says how the job's differs compare (the defaults when None).

    ``fleet_slots`` counts the fleet's worker processes (asked only when the
    request leaves the batch size to ACE); None runs the batches in this process.
    On a fleet the spec carries the largest batch's size, which the summary reports.
    """
    started = datetime.now(timezone.utc).isoformat()
    plan = prepare_diff(request, settings, task_id, sessions, tuning)
    slots = None
    if fleet_slots is not None and not request.batch_size:
        slots = fleet_slots()
    groups = cut_batches(plan.ranges, request.batch_size, slots,
                         settings.TASKS_PER_WORKER_PROCESS)
    spec = replace(plan.spec, tuning=tuning or DiffTuning())
    if fleet_slots is not None:
        spec = replace(spec, batch_size=max(len(g) for g in groups))
    meta = {"max_cpu_ratio": request.max_cpu_ratio, "executor": executor,
            "output": request.output, "started_at": started,
            "ranges_total": len(plan.ranges), "batch_firsts": [g[0].index for g in groups]}
    return DiffJob(spec, groups, meta)


def run_batch(spec: DiffSpec, ranges: list[KeyRange], sessions: NodeSessions,
              budget: DiffBudget, on_range_done: OnRangeDone | None = None,
              hints: DensityHints | None = None) -> BatchResult:
    """Diff one batch of ranges into its partial file (see :func:`differ.diff_batch`)."""
    return diff_batch(spec, ranges, sessions, budget, on_range_done, hints)


def save_job(job: DiffJob) -> None:
    job.work.write_diff_plan(job.to_dict())


def saved_job(output_dir: str | Path, task_id: str) -> DiffJob | None:
    """The job planned earlier under this id (its planning step is being redelivered)."""
    work = WorkDir.for_task(output_dir, task_id)
    return DiffJob.from_dict(work.read_diff_plan()) if work.has_diff_plan() else None


def load_job(work_dir: str | Path) -> DiffJob:
    return DiffJob.from_dict(WorkDir(work_dir).read_diff_plan())


def collect_results(job: DiffJob) -> list[BatchResult] | None:
    """Every batch's own record from the work folder; None while one is missing.

    The records on disk, not the executor's list of results, are what count, so
    a batch that ran twice after its worker died counts once.
    """
    return job.work.read_batch_results(job.meta["batch_firsts"])


def job_view(job: DiffJob) -> PartialsView:
    """A view over every batch's partial file, in range order, to spool batches as they end."""
    return partials_view(job.spec, [job.work.partial_path(first)
                                    for first in job.meta["batch_firsts"]])


def merge_job(job: DiffJob, results: list[BatchResult], output_dir: Path,
              view: PartialsView | None = None) -> tuple[Path, DiffSummary]:
    """Write the diff file (and its report) from the batches; remove the work folder.

    ``view`` is the job's :func:`job_view` when its first batches were spooled early.
    """
    return merge_diff(job.spec, job.meta, results, job.ranges_total, output_dir,
                      job.meta["output"], job.meta["started_at"], view=view)
