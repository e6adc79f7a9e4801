"""A task's life in the task store: PENDING, RUNNING, then COMPLETED or FAILED.

Apart from the store itself so that code which only waits for an outcome (the
CLI following a fleet task) need not load SQLAlchemy to name one.
"""

from __future__ import annotations

PENDING, RUNNING, COMPLETED, FAILED = "PENDING", "RUNNING", "COMPLETED", "FAILED"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)
FINISHED = (COMPLETED, FAILED)


class JobFinished(Exception):  # noqa: N818 (not an error: the work is no longer wanted)
    """The job this work belongs to has finished (or is lost): stop, and write nothing.

    Raised by whatever finds it out (a counter guarded by the job's published state,
    the work folder once the job's plan is gone) and caught where a batch runs, which
    then ends quietly."""
