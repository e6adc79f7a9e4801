"""``ace.retention``: beat's hourly removal of work and results older than
``RESULT_RETENTION_DAYS`` (:mod:`ace_shared.diff.retention`), and each worker's
pruning of its own output folder (hosts may share no disk)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ace_shared.diff.retention import cutoff_for, remove_old_local, remove_old_shared
from ace_shared.tasks.filestore import active_store
from ace_workers import runtime
from ace_workers.app import get_app

RETENTION_EVERY_SECONDS = 3600

log = logging.getLogger(__name__)


def prune_here() -> dict[str, int]:
    """Remove this host's old work folders and result files; what went."""
    cutoff = cutoff_for(runtime.settings().RESULT_RETENTION_DAYS)
    if cutoff is None:
        return {"folders": 0, "files": 0}
    removed = remove_old_local(runtime.settings().output_dir, cutoff)
    return {"folders": removed.folders, "files": removed.files}


# get_app() rather than the lazy ``app``, which has no type where this module and the
# app (through sweep) import each other
@get_app().task(name="ace.retention")
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


class LocalPruning:
    """Prunes this worker's own folder at most once per :data:`RETENTION_EVERY_SECONDS`;
    called from the worker's sweep thread."""

    def __init__(self) -> None:
        self.last = 0.0

    def maybe(self) -> None:
        now = time.monotonic()
        if self.last and now - self.last < RETENTION_EVERY_SECONDS:
            return
        self.last = now
        try:
            prune_here()
        except Exception as exc:  # a folder removed under us: next time
            log.warning("could not prune the output folder: %s", exc)
