"""Shared pieces of the bench scripts: cluster access, concurrent node work, process measuring.

Bench scripts print figures for people; they are not tests. They talk to a
running cluster through the same cluster file ACE reads, and run the real
``ace`` command as a subprocess, so what they measure is what a user gets.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg2
import psycopg2.extensions

from ace_shared.config import Settings
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import NodeTarget, connect, node_targets

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.05
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(RuntimeError):
    """The bench cannot go on; the message says what to do."""


def start_hint(cluster_dir: Path, cluster: str) -> str:
    """How to get a local cluster of this name running, as commands to paste."""
    return (
        "Start one with:\n"
        "  bash deploy/setup.sh --no-demo\n"
        f"  .venv/bin/python deploy/localcluster.py start --dir .ace-local --name {cluster} "
        "--ports 6432,6433,6434 --timezones UTC,America/New_York,Asia/Kolkata "
        f"--cluster-dir {cluster_dir}\n"
        "(or run plain `bash deploy/setup.sh`, which starts the 3-node cluster `demo` "
        "with its cluster file in ./cluster)"
    )


def load_targets(cluster_dir: Path, cluster: str) -> tuple[NodeTarget, ...]:
    """Connection targets of every active node of ``cluster``, as ACE itself would build them."""
    settings = Settings(CLUSTER_DIR=str(cluster_dir))
    try:
        definition = load_cluster(settings.cluster_dir, cluster)
        chosen = definition.select_nodes("all")
        return node_targets(definition, chosen, None, settings)
    except AceError as exc:
        raise BenchError(f"{exc}\n{start_hint(cluster_dir, cluster)}") from exc


def open_connection(target: NodeTarget) -> psycopg2.extensions.connection:
    """A pinned, autocommit connection (VACUUM needs autocommit).

    ACE's sessions search ``pg_catalog, pg_temp`` only; the benches' own tables and
    types are made and read in ``public``, as a user's would be.
    """
    conn = connect(target)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET search_path = public")
    return conn


def check_reachable(targets: Sequence[NodeTarget], cluster_dir: Path, cluster: str) -> None:
    def probe(target: NodeTarget) -> None:
        conn = open_connection(target)
        conn.close()
    try:
        on_each_node(targets, probe)
    except AceError as exc:
        raise BenchError(f"{exc}\nIs the cluster running? {start_hint(cluster_dir, cluster)}") \
            from exc


@dataclass
class NodeTimings:
    """Per-node results and elapsed seconds of one concurrent step, and its wall time."""

    results: dict[str, object]
    elapsed: dict[str, float]
    wall: float


def on_each_node(targets: Sequence[NodeTarget],
                 fn: Callable[[NodeTarget], T]) -> dict[str, T]:
    """Run ``fn(target)`` for every node at once, one thread each; results by node."""
    return timed_on_each_node(targets, fn).results  # type: ignore[return-value]


def timed_on_each_node(targets: Sequence[NodeTarget],
                       fn: Callable[[NodeTarget], object]) -> NodeTimings:
    """Like :func:`on_each_node`, also timing each node and the whole step (until the last)."""
    elapsed: dict[str, float] = {}

    def timed(target: NodeTarget) -> object:
        t0 = time.perf_counter()
        try:
            return fn(target)
        finally:
            elapsed[target.node] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = {t.node: pool.submit(timed, t) for t in targets}
        results = {node: fut.result() for node, fut in futures.items()}
    return NodeTimings(results, elapsed, time.perf_counter() - t0)


# --- process memory -----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc/<pid>/task/*/children."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return out


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and all their live descendants."""
    seen: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(_children(pid))
    return seen


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def pss_kb(pid: int) -> int:
    """Proportional set size in KiB: shared pages split between the processes sharing them.

    Summing RSS over forked processes (a Celery pool) counts their shared pages
    once per process; summing PSS counts them once. 0 when unreadable.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


class TreeMemorySampler:
    """Polls the memory of process trees every ~50 ms, keeping the peaks.

    ``peak_tree_kb`` is the largest RSS sum over the whole tree seen at one
    poll, ``peak_tree_pss_kb`` the largest PSS sum (shared pages counted once),
    ``peak_process_kb`` the largest single process's RSS. A spike shorter than
    one poll can be missed, which is why :func:`run_measured` also reports the
    kernel's own ``ru_maxrss`` of the main process.
    """

    def __init__(self, roots: Callable[[], list[int]], interval: float = POLL_SECONDS) -> None:
        self._roots = roots
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.peak_tree_kb = 0
        self.peak_process_kb = 0
        self.peak_tree_pss_kb = 0
        self.max_processes = 0
        self.samples = 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> None:
        pids = process_tree(self._roots())
        sizes = [rss_kb(p) for p in pids]
        self.samples += 1
        self.max_processes = max(self.max_processes, sum(1 for s in sizes if s))
        self.peak_tree_kb = max(self.peak_tree_kb, sum(sizes))
        self.peak_process_kb = max(self.peak_process_kb, max(sizes, default=0))
        self.peak_tree_pss_kb = max(self.peak_tree_pss_kb, sum(pss_kb(p) for p in pids))

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class MeasuredRun:
    """A finished subprocess: exit code, output, wall time and memory peaks."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    peak_tree_kb: int
    peak_process_kb: int
    ru_maxrss_kb: int
    max_processes: int
    samples: int
    peak_tree_pss_kb: int = 0


def run_measured(cmd: Sequence[str], env: dict[str, str],
                 extra_roots: Callable[[], list[int]] | None = None) -> MeasuredRun:
    """Run ``cmd``, timing it from spawn to exit and sampling its process tree's RSS.

    ``extra_roots`` adds processes that are not its children (fleet workers) to
    the sampled trees. The main process's ``ru_maxrss`` comes from ``wait4``,
    so it is that process's own kernel-measured peak, not a maximum over every
    child this bench ever started (which ``RUSAGE_CHILDREN`` would give).
    """
    out_path = _scratch_file("stdout")
    err_path = _scratch_file("stderr")
    with open(out_path, "w+") as out, open(err_path, "w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)

        def roots() -> list[int]:
            return [proc.pid, *(extra_roots() if extra_roots else [])]

        with TreeMemorySampler(roots) as sampler:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    os.unlink(out_path)
    os.unlink(err_path)
    return MeasuredRun(proc.returncode, stdout, stderr, wall, sampler.peak_tree_kb,
                       sampler.peak_process_kb, int(usage.ru_maxrss), sampler.max_processes,
                       sampler.samples, sampler.peak_tree_pss_kb)


def _scratch_file(kind: str) -> str:
    import tempfile
    fd, path = tempfile.mkstemp(prefix=f"bench-{kind}-")
    os.close(fd)
    return path


# --- locating tools and formatting ----------------------------------------------------------


def venv_tool(name: str) -> str:
    """The console script ``name`` next to this Python (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f}s"


def fmt_mb(kib: int) -> str:
    return f"{kib / 1024:.0f} MB"
