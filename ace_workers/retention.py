"""``ace.retention``: beat's hourly removal of work and results older than
``RESULT_RETENTION_DAYS`` (:mod:`ace_shared.diff.retention`). Each worker also
prunes its own output folder (hosts may share no disk) from its sweep thread
(:mod:`ace_workers.fleet.pruning`)."""

from __future__ import annotations

import logging
from typing import Any

from ace_shared.diff.retention import cutoff_for, remove_old_shared
from ace_shared.tasks.filestore import active_store
from ace_workers import names
from ace_workers.app import app
from ace_workers.fleet import runtime
from ace_workers.fleet.pruning import prune_here

log = logging.getLogger(__name__)


@app.task(name=names.RETENTION)
def retention() -> dict[str, Any]:
    """Remove old work and results from the shared store and this worker's folder."""
    cutoff = cutoff_for(runtime.settings().RESULT_RETENTION_DAYS)
    if cutoff is None:
        return {"skipped": True}
    done: dict[str, Any] = prune_here()
    shared = active_store()
    done["shared"] = remove_old_shared(shared, cutoff) if shared is not None else 0
    if any(done.values()):
        log.info("retention: removed %s (older than %s)", done, cutoff.isoformat())
    return done
