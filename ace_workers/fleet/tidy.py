"""What a finished job leaves behind is removed the moment it finishes.

A job's work folder (:mod:`ace_shared.diff.workdir`) and its counters in
Redis are only of use while it runs. Whatever ends it (its merge, a failed
batch, the sweep finding it lost with Redis's state, too many redeliveries),
the task store records the outcome, and the worker that recorded it (or the
front door that cancelled the job) removes them here: a diff lost to a Redis restart no longer leaves hundreds of
megabytes behind. Batches of the job still running find their job finished
and stop (:class:`~ace_workers.fleet.counters.JobFinished`), writing nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ace_shared.diff.workdir import WorkDir
from ace_workers.fleet.counters import RedisPartCounter


def after_job(client: Any, job_id: str, output_dir: str | Path) -> None:
    """Remove a finished job's work folder and its progress and budget counters."""
    WorkDir.for_task(output_dir, job_id).remove()
    for name in ("progress", "budget"):
        RedisPartCounter(client, f"{name}:{job_id}").clear()
