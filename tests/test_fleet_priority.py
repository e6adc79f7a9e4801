"""A worker started niced, as deploy/fleet.sh and the systemd unit start it, yields the CPU
to the API beside it on a Linux host that shares the CPU between sessions first."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_helpers import CELERY, own_fleet

AUTOGROUP = Path("/proc/self/autogroup")


def _session_niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


@pytest.mark.skipif(not AUTOGROUP.exists() or
                    Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1",
                    reason="this kernel does not share the CPU between sessions first")
def test_a_niced_worker_gives_its_session_its_niceness(tmp_path: Path) -> None:
    with own_fleet(tmp_path, ()) as fl:
        fl.start_worker("w1", celery=["nice", "-n", "10", *CELERY])  # in a session of its own
        worker = fl.procs["w1"].pid
        assert _session_niceness(worker) == 10
