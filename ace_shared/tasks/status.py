"""A task's life in the task store: PENDING, RUNNING, then COMPLETED or FAILED.

Apart from the store itself so that code which only waits for an outcome (the
CLI following a fleet task) need not load SQLAlchemy to name one.
"""

from __future__ import annotations

PENDING, RUNNING, COMPLETED, FAILED = "PENDING", "RUNNING", "COMPLETED", "FAILED"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)
FINISHED = (COMPLETED, FAILED)
