"""The auto-repair polls Celery beat runs from ``auto_repair_config``.

Both are thin: the work is in :mod:`ace_shared.autorepair.run`. Each returns a
small summary (counts per node and in total, and why a node was skipped) so
that a run can be read in Flower or the result backend. A mistake such as an
unknown cluster is returned as ``error`` rather than raised, so that beat's
next run is not held up by retries of a run that cannot succeed.
"""

from __future__ import annotations

from typing import Any

from ace_shared.autorepair.run import poll_exceptions, repair_exceptions
from ace_shared.errors import AceError
from ace_workers import names
from ace_workers.app import app
from ace_workers.fleet import runtime


# These two keep their result (one small key per run, unlike a diff's batches): they have no
# task-store record, so the backend is where whoever sent one, beat aside, reads its outcome.
@app.task(name=names.AUTO_REPAIR_POLL, ignore_result=False)
def auto_repair_poll(cluster_name: str, dbname: str | None = None) -> dict[str, Any]:
    """Copy new Spock exceptions into the status tables as PENDING, on every node."""
    try:
        return poll_exceptions(cluster_name, dbname, runtime.settings()).to_dict()
    except AceError as exc:
        return {"cluster_name": cluster_name, "error": str(exc)}


@app.task(name=names.AUTO_REPAIR_REPAIR, ignore_result=False)
def auto_repair_repair(cluster_name: str, dbname: str | None = None) -> dict[str, Any]:
    """Settle the PENDING insert-insert conflicts by last commit wins, on every node."""
    try:
        return repair_exceptions(cluster_name, dbname, runtime.settings()).to_dict()
    except AceError as exc:
        return {"cluster_name": cluster_name, "error": str(exc)}
