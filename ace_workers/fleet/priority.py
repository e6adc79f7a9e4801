"""A niced worker's niceness, made to count against the API on a Linux host.

``deploy/fleet.sh`` and the systemd worker unit start each worker at niceness 10
so that, on a host that runs both, the API's answers do not wait behind the
diffs. But Linux with ``sched_autogroup_enabled`` (the default of most
distributions) shares the CPU between sessions first, and niceness counts only
among the processes of one session; fleet.sh and systemd start every service
in a session of its own, so a worker at niceness 10 got as much CPU as the API
beside it. A worker that leads its own session therefore also gives its
session (its autogroup: itself and its pool processes) its niceness, which a
process may always raise for itself. A worker sharing a session with other
programs (started from a shell) leaves the session's niceness alone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")

log = logging.getLogger(__name__)


def nice_session() -> int | None:
    """Give this process's session its niceness when it leads the session and is niced;
    the niceness set, or None when nothing was changed."""
    niceness = os.nice(0)
    if niceness <= 0 or os.getsid(0) != os.getpid() or not AUTOGROUP.exists():
        return None
    try:
        current = int(AUTOGROUP.read_text().split()[-1])  # "/autogroup-123 nice 0"
        if current >= niceness:
            return None
        AUTOGROUP.write_text(str(niceness))
    except (OSError, ValueError, IndexError) as exc:
        log.warning("could not give this worker's session niceness %d (%s); the API may "
                    "wait behind its work on this host", niceness, exc)
        return None
    return niceness
