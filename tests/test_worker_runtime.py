"""What a worker process keeps between tasks is one object per process, made in one place."""

from __future__ import annotations

import os

from ace_workers.fleet import runtime


def test_a_process_keeps_one_runtime_and_a_forked_child_makes_its_own() -> None:
    mine = runtime.current()
    assert runtime.current() is mine
    assert runtime.density_hints() is mine.density_hints
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: a pool process Celery forked
        theirs = runtime.current()
        os.write(write, b"new" if theirs is not mine and theirs.pid == os.getpid() else b"old")
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 3) == b"new"
    assert runtime.current() is mine


def test_progress_is_reported_once_an_interval_and_always_at_the_end() -> None:
    reports = runtime.Throttle(every=3600)
    assert reports.ready()  # the first report of a process goes out
    assert not reports.ready()  # the next within the interval does not
    assert reports.ready(last=True)  # the job's last range is always reported
    assert runtime.Throttle(every=0).ready() and runtime.Throttle(every=0).ready()
