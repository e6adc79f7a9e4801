"""Each worker's pruning of its own output folder (hosts may share no disk).

Beat's hourly ``ace.retention`` task (:mod:`ace_workers.retention`) prunes the
shared store and whichever host runs it; every worker's sweep thread
(:mod:`ace_workers.fleet.sweep`) also prunes its own host through
:class:`LocalPruning`. It lives with the fleet's machinery so that the sweep
needs no task module.
"""

from __future__ import annotations

import logging
import time

from ace_shared.diff.retention import cutoff_for, remove_old_local
from ace_workers.fleet import runtime

RETENTION_EVERY_SECONDS = 3600

log = logging.getLogger(__name__)


def prune_here() -> dict[str, int]:
    """Remove this host's old work folders and result files; what went."""
    cutoff = cutoff_for(runtime.settings().RESULT_RETENTION_DAYS)
    if cutoff is None:
        return {"folders": 0, "files": 0}
    removed = remove_old_local(runtime.settings().output_dir, cutoff)
    return {"folders": removed.folders, "files": removed.files}


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
