#!/usr/bin/env python3
"""How the REST API holds up: task-status latency of many polling clients, idle and busy.

Starts its own local fleet (a ``redis-server`` on a free port, Celery workers
and ``ace api`` over mutual TLS with a throwaway certificate authority), builds
the small table ``bench_api_items`` on every node of a running cluster (one
row differs on the second node) readable by the caller role ``--caller``
(``demo_caller``, which ``deploy/setup.sh`` serves; the clients' certificate
bears its name, and the workers log in as it with ACE's client certificate of
the local cluster, ``.ace-local/<cluster>/tls`` or ``--cluster-tls``, unless
``ACE_USER_CERT_FILE`` is set), then runs two phases. In each, ``--clients``
pollers (threads spread over ``--client-processes`` processes, each with its
own keep-alive TLS connection) connect at random moments over ``--ramp-up``
seconds and then poll ``GET /ace/task-status/<id>`` for ``--seconds`` more,
each starting a poll every ``--poll-interval`` seconds:

* **idle fleet**: they poll ``--idle-tasks`` diffs that were run to
  completion beforehand; nothing else runs;
* **busy fleet**: once every client is connected, ``--submissions``
  table-diffs are queued (``POST /ace/table-diff``) and the clients poll
  those while the workers run them.

It prints latency percentiles (p50/p95/p99/max) and errors of the first poll
of each client (its TLS handshake), of the polls during the ramp-up, of the
steady state (the figure the targets are about: p99 under 100 ms idle, under
250 ms busy) and of the busy phase's submissions (p99 under 1 s); the one
caller's per-caller limits are raised out of the way (still checked); the CPU time per steady-state poll spent by the API's processes
and by the bench's own polling clients (which share the machine's cores, so
a client heavier than the API would make the API look slower than it is); how many diffs were still running when the busy phase ended;
the machine's load average; and whether no request failed and every task
reached COMPLETED (exit code 1 otherwise).

Usage::

    ACE_CLUSTER_DIR=/tmp/acedev/cluster .venv/bin/python bench/bench_api.py --cluster dev \
        --cluster-tls /tmp/acedev/local/dev/tls
    .venv/bin/python bench/bench_api.py --clients 50 --seconds 10 --submissions 20

Needs ``redis-server`` on the PATH and the dev extras (requests).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from _common import REPO_ROOT, BenchError, check_reachable, load_targets, on_each_node
from _common import open_connection as open_node

sys.path.insert(0, str(REPO_ROOT / "deploy"))
from certs import Authority  # noqa: E402  (deploy/certs.py, the project's development CA)

from ace_api.rest.server import DEFAULT_THREADS, DEFAULT_WORKERS

TABLE = "bench_api_items"
PYTHON = sys.executable


@dataclass
class Latencies:
    """Latencies (seconds) and failures of one kind of request, from many threads."""

    name: str
    seconds: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, elapsed: float, error: str | None) -> None:
        with self.lock:
            self.seconds.append(elapsed)
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1

    def percentile(self, p: float) -> float:
        values = sorted(self.seconds)
        return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def report(self, wall: float) -> str:
        values = sorted(self.seconds)
        if not values:
            return f"{self.name}: no requests"

        def pct(p: float) -> str:
            return f"{self.percentile(p) * 1000:.1f}"
        lines = [f"{self.name}: {len(values)} requests ({len(values) / wall:.0f}/s), "
                 f"{self.failed} failed",
                 f"  latency ms: p50 {pct(50)}  p95 {pct(95)}  p99 {pct(99)}  "
                 f"max {values[-1] * 1000:.1f}"]
        lines += [f"  {count} x {error}" for error, count in sorted(self.errors.items())]
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise BenchError(f"Timed out after {timeout:.0f}s waiting for {what}.")


class Services:
    """The local fleet: redis, Celery workers and ``ace api``, each in its own process group."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.api_pgid = 0  # ace api's process group: its gunicorn master and workers

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, env=self.env, cwd=self.workdir, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]


def make_pki(directory: Path, common_name: str) -> Pki:
    """A throwaway authority (the project's ``deploy/certs.py``), server and client."""
    ca = Authority(directory)
    return Pki(ca.ca_file, ca.issue_server(("127.0.0.1",)),
               ca.issue_client(common_name, stem="client"))


def session_for(pki: Pki) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the bench's CA
    s.verify = str(pki.ca_file)
    s.cert = (str(pki.client[0]), str(pki.client[1]))
    return s


def build_table(cluster_dir: Path, cluster: str, rows: int, caller: str) -> None:
    """The bench table on every node, readable by ``caller``; one row differs on the second."""
    targets = load_targets(cluster_dir, cluster)
    check_reachable(targets, cluster_dir, cluster)

    def build(target: object) -> None:
        conn = open_node(target)  # type: ignore[arg-type]
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (caller,))
            if cur.fetchone() is None:
                conn.close()
                raise BenchError(
                    f"The caller role {caller} does not exist on the cluster {cluster}; serve "
                    f"it: deploy/localcluster.py serve-role --name {cluster} --role {caller}.")
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text)")
            cur.execute(f"INSERT INTO {TABLE} SELECT g, 'item ' || g "  # noqa: S608 - constants
                        "FROM generate_series(1, %s) g", (rows,))
            cur.execute(f'GRANT SELECT ON {TABLE} TO "{caller}"')
        conn.close()
    on_each_node(targets, build)
    conn = open_node(targets[1])
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {TABLE} SET label = 'differs' WHERE id = 1")  # noqa: S608
    conn.close()


def node_login(args: argparse.Namespace) -> dict[str, str]:
    """How the workers log in to the nodes as the caller: ACE's client certificate.

    A task runs as its caller's role (docs/security.md); the local cluster lets
    ACE's certificate, kept in its ``tls`` folder, log in as the roles it serves.
    Settings already in the environment win.
    """
    if os.environ.get("ACE_USER_CERT_FILE"):
        return {}
    tls = Path(args.cluster_tls or REPO_ROOT / ".ace-local" / args.cluster / "tls").resolve()
    if not (tls / "ace-client.crt").is_file():
        raise BenchError(f"ACE's client certificate for the nodes is not in {tls}; give "
                         "--cluster-tls (the local cluster's tls folder) or set "
                         "ACE_USER_CERT_FILE, ACE_USER_KEY_FILE and ACE_DB_CA_CERT_FILE.")
    return {"ACE_USE_CERT_AUTH": "1", "ACE_USER_CERT_FILE": str(tls / "ace-client.crt"),
            "ACE_USER_KEY_FILE": str(tls / "ace-client.key"),
            "ACE_DB_CA_CERT_FILE": str(tls / "ca.crt")}


def start_services(args: argparse.Namespace, workdir: Path, pki: Pki) -> Services:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise BenchError("redis-server is not installed; run deploy/setup.sh first.")
    redis_port, api_port = free_port(), free_port()
    key = workdir / "task-signing.key"  # a throwaway key, unless one is set
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    env = {"ACE_TASK_SIGNING_KEY_FILE": str(key), **os.environ,
           "ACE_CLUSTER_DIR": str(Path(args.cluster_dir).resolve()),
           "ACE_OUTPUT_DIR": str(workdir / "out"),
           "ACE_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
           "ACE_RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/1",
           "ACE_DATABASE_URL": f"sqlite:///{workdir / 'ace_tasks.db'}",
           "ACE_API_CERT_FILE": str(pki.server[0]), "ACE_API_KEY_FILE": str(pki.server[1]),
           "ACE_CA_CERT_FILE": str(pki.ca_file),
           "PYTHONPATH": str(REPO_ROOT),
           # one caller submits every diff: its per-caller limits are set out of the way
           # (still checked on each submission, as they cost what they cost)
           "ACE_API_RATE_LIMIT": "100000/minute",
           "ACE_API_MAX_ACTIVE_TASKS_PER_CALLER": "100000",
           "ACE_API_MAX_QUEUED_TASKS_PER_CALLER": "100000", **node_login(args)}
    services = Services(workdir, env)
    services.env["ACE_API_PORT"] = str(api_port)
    services.spawn("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)])
    for i in range(args.celery_workers):
        name = f"bench{i + 1}"
        # as deploy/fleet.sh runs them: yielding the CPU to the API
        services.spawn(name, ["nice", "-n", str(args.worker_nice), PYTHON, "-m", "celery",
                              "-A", "ace_workers", "worker", "-n", f"{name}@%h",
                              "-c", str(args.celery_concurrency),
                              "--without-mingle", "--without-gossip", "-l", "WARNING"])
    services.api_pgid = services.spawn("api", [
        PYTHON, "-m", "ace_api", "api", "--port", str(api_port),
        "--workers", str(args.api_workers), "--threads", str(args.api_threads)]).pid
    probe = session_for(pki)

    def api_answers() -> bool:
        try:
            return probe.get(f"https://127.0.0.1:{api_port}/ace/swagger.json",
                             timeout=2).status_code == 200
        except requests.RequestException:
            return False
    try:
        wait_until(api_answers, 60, "ace api to answer")
    except BenchError:
        services.stop()
        raise BenchError("ace api did not start:\n" + services.log("api")[-2000:]) from None
    return services


@dataclass(frozen=True)
class Window:
    """When pollers connect and when their polls count (wall-clock times, shared by processes).

    Clients connect at random moments over ``ramp`` seconds from ``start``, as
    real clients do, instead of 200 TLS handshakes in the same instant; polls
    from ``start + ramp`` to ``end`` are the steady state the target is about.
    """

    start: float
    ramp: float
    end: float

    @property
    def steady_from(self) -> float:
        return self.start + self.ramp


PollFigures = tuple[list[float], list[float], list[float], dict[str, int], float]


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user and system) used so far by the live processes of group ``pgid``."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_over(window: Window, clock: Callable[[], float]) -> Callable[[], float]:
    """Start measuring ``clock`` (CPU seconds) over the window's steady state; the
    returned call waits for the window's end and gives the CPU seconds used in it."""
    marks: list[float] = []

    def mark() -> None:
        for moment in (window.steady_from, window.end):
            time.sleep(max(0.0, moment - time.time()))
            marks.append(clock())
    thread = threading.Thread(target=mark, daemon=True)
    thread.start()

    def used() -> float:
        thread.join()
        return marks[1] - marks[0]
    return used


class TaskIds:
    """The task ids to poll, from a JSON file another process may rewrite (read again
    when it changes, at most once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: list[str] = []
        self.stamp = 0
        self.checked = 0.0

    def current(self) -> list[str]:
        if time.monotonic() - self.checked >= 1.0 or not self.ids:
            self.checked = time.monotonic()
            stamp = self.path.stat().st_mtime_ns
            if stamp != self.stamp:
                self.ids, self.stamp = json.loads(self.path.read_text()), stamp
        return self.ids


def write_ids(path: Path, task_ids: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(task_ids))
    tmp.replace(path)


def poll_for(base: str, pki: Pki, ids_file: Path, clients: int, window: Window,
             interval: float, seed: int) -> PollFigures:
    """``clients`` threads of one process, each on its own TLS connection, polling
    task-status of random tasks of ``ids_file``, each starting a poll every ``interval`` s.

    Runs in a child process so the pollers' own Python (200 threads in one
    interpreter would queue on one lock) does not count as API latency, and
    on ``http.client`` (a keep-alive connection, a few lines per request)
    rather than requests, whose own work per call is larger than the API's.
    Returns the first poll of each client (with its TLS handshake), the other
    polls while clients were still connecting, the steady-state polls, errors
    by kind, and the CPU seconds this process used in the steady state.
    """
    first: list[float] = []
    ramp: list[float] = []
    steady: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    cpu = cpu_over(window, time.process_time)

    def poller(n: int) -> None:
        host, port = base.removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(str(pki.client[0]), str(pki.client[1]))
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=60)
        rng = random.Random(seed * 100_000 + n)
        task_ids = TaskIds(ids_file)
        time.sleep(max(0.0, window.start + rng.random() * window.ramp - time.time()))
        into = first
        while time.time() < window.end:
            started = time.time()
            t0 = time.perf_counter()
            error = None
            try:
                conn.request("GET", f"/ace/task-status/{rng.choice(task_ids.current())}")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    error = f"HTTP {response.status}: {body[:120]!r}"
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
                conn.close()  # the next request opens a new connection
            elapsed = time.perf_counter() - t0
            with lock:
                into.append(elapsed)
                if error:
                    errors[error] = errors.get(error, 0) + 1
            into = steady if started >= window.steady_from else ramp
            time.sleep(max(0.0, interval - elapsed))
        conn.close()

    threads = [threading.Thread(target=poller, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return first, ramp, steady, errors, cpu()


def poll_phase(args: argparse.Namespace, name: str, base: str, pki: Pki,
               ids_file: Path, api_pgid: int, submit: Callable[[], None] | None = None
               ) -> tuple[list[Latencies], Latencies]:
    """``args.clients`` pollers spread over ``args.client_processes`` processes; the
    figures of their first polls, of the ramp-up, and (last) of the steady state.
    ``submit`` runs in a thread once every client is connected. Prints the CPU
    time per steady-state poll of the API (process group ``api_pgid``) and of
    the polling clients."""
    first = Latencies(f"{name}: first poll of each client (with its TLS handshake)")
    ramp = Latencies(f"{name}: other polls while clients were still connecting")
    steady = Latencies(f"{name}: task-status polls, all clients connected")
    procs = max(1, min(args.client_processes, args.clients))
    shares = [args.clients // procs + (1 if i < args.clients % procs else 0)
              for i in range(procs)]
    start = time.time() + 1.0  # the child processes are up by then
    window = Window(start, args.ramp_up, start + args.ramp_up + args.seconds)
    api_cpu = cpu_over(window, lambda: group_cpu_seconds(api_pgid))
    client_cpu = 0.0
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(poll_for, base, pki, ids_file, share, window,
                               args.poll_interval, i) for i, share in enumerate(shares)]
        if submit is not None:
            time.sleep(max(0.0, window.steady_from - time.time()))
            submit()
        for future in futures:
            *figures, errors, cpu = future.result()
            client_cpu += cpu
            for stats, values in zip((first, ramp, steady), figures, strict=True):
                stats.seconds += values
            for error, count in errors.items():
                steady.errors[error] = steady.errors.get(error, 0) + count
    for stats, wall in ((first, args.ramp_up), (ramp, args.ramp_up), (steady, args.seconds)):
        print(stats.report(wall), flush=True)
    polls = max(1, len(steady.seconds))
    print(f"  CPU per steady-state poll: API {api_cpu() / polls * 1000:.2f} ms"
          f"{' (with the submissions and their status writes)' if submit else ''}, "
          f"polling clients {client_cpu / polls * 1000:.2f} ms", flush=True)
    return [first, ramp, steady], steady


def submit_diffs(args: argparse.Namespace, base: str, pki: Pki, count: int,
                 stats: Latencies) -> list[str]:
    """Queue ``count`` table-diffs of the bench table, one after another; their task ids."""
    session = session_for(pki)
    body = {"cluster_name": args.cluster, "table_name": f"public.{TABLE}",
            "block_rows": 1000, "quiet": True}
    task_ids: list[str] = []
    for _ in range(count):
        t0 = time.perf_counter()
        try:
            response = session.post(f"{base}/ace/table-diff", json=body, timeout=60)
        except requests.RequestException as exc:
            stats.record(time.perf_counter() - t0, type(exc).__name__)
            continue
        ok = response.status_code == 200
        stats.record(time.perf_counter() - t0,
                     None if ok else f"HTTP {response.status_code}: {response.text[:120]}")
        if ok:
            task_ids.append(response.json()["task_id"])
    return task_ids


def wait_for_tasks(base: str, pki: Pki, task_ids: list[str], timeout: float
                   ) -> dict[str, str]:
    session = session_for(pki)
    final: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(final) < len(task_ids):
        for task_id in task_ids:
            if task_id in final:
                continue
            doc = session.get(f"{base}/ace/task-status/{task_id}", timeout=30).json()
            if doc["status"] in ("COMPLETED", "FAILED"):
                final[task_id] = doc["status"] if doc["status"] == "COMPLETED" \
                    else f"FAILED: {doc.get('error')}"
        time.sleep(0.5)
    for task_id in task_ids:
        final.setdefault(task_id, "unfinished")
    return final


def unfinished(base: str, pki: Pki, task_ids: list[str]) -> int:
    session = session_for(pki)
    return sum(1 for task_id in task_ids
               if session.get(f"{base}/ace/task-status/{task_id}", timeout=30).json()["status"]
               not in ("COMPLETED", "FAILED"))


def run(args: argparse.Namespace, base: str, pki: Pki, api_pgid: int) -> bool:
    """Idle phase, then busy phase; print both; True if nothing failed."""
    warm = submit_diffs(args, base, pki, args.idle_tasks,
                        Latencies("idle: table-diff submissions"))
    wait_for_tasks(base, pki, warm, timeout=300)
    ids_file = Path(tempfile.mkdtemp(prefix="ace-bench-ids-")) / "ids.json"
    write_ids(ids_file, warm)
    print(f"idle fleet: {args.clients} clients polling {len(warm)} finished tasks every "
          f"{args.poll_interval}s; they connect over {args.ramp_up:.0f}s, then "
          f"{args.seconds:.0f}s all connected", flush=True)
    idle_all, idle = poll_phase(args, "idle", base, pki, ids_file, api_pgid)

    busy_ids: list[str] = []
    submits = Latencies("busy: table-diff submissions")

    def submit_and_share() -> None:
        t0 = time.monotonic()
        for _ in range(0, args.submissions, 10):
            busy_ids.extend(submit_diffs(args, base, pki, min(10, args.submissions
                                                                - len(busy_ids)), submits))
            write_ids(ids_file, busy_ids or warm)
        print(submits.report(time.monotonic() - t0), flush=True)

    print(f"busy fleet: the same clients; once all are connected, {args.submissions} "
          "table-diffs are queued and the clients poll those", flush=True)
    busy_all, busy = poll_phase(args, "busy", base, pki, ids_file, api_pgid, submit_and_share)
    still = unfinished(base, pki, busy_ids)
    print(f"diffs still queued or running when the busy phase ended: {still} of "
          f"{len(busy_ids)}")
    shutil.rmtree(ids_file.parent, ignore_errors=True)
    t0 = time.monotonic()
    final = wait_for_tasks(base, pki, busy_ids, timeout=900)
    completed = sum(1 for status in final.values() if status == "COMPLETED")
    print(f"tasks: {len(busy_ids)} submitted, {completed} COMPLETED "
          f"(the last {time.monotonic() - t0:.1f}s after the busy phase)")
    for task_id, status in final.items():
        if status != "COMPLETED":
            print(f"  {task_id}: {status}")
    print("load average (1/5/15 min) at the end: "
          + " ".join(f"{x:.1f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs (the figures are only as quiet as the machine)")
    for what, p99, target in (("idle task-status", idle.percentile(99), 0.1),
                              ("busy task-status", busy.percentile(99), 0.25),
                              ("busy submission", submits.percentile(99), 1.0)):
        print(f"{what} p99 {p99 * 1000:.1f} ms: "
              f"{'within' if p99 < target else 'OVER'} the {target * 1000:.0f} ms target")
    return (all(kind.failed == 0 for kind in (*idle_all, *busy_all, submits))
            and len(busy_ids) == args.submissions and completed == len(busy_ids))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default="demo")
    parser.add_argument("--cluster-dir", default=os.environ.get("ACE_CLUSTER_DIR", "cluster"))
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--client-processes", type=int, default=4,
                        help="processes the polling clients are spread over")
    parser.add_argument("--seconds", type=float, default=30,
                        help="length of each phase once every client is connected")
    parser.add_argument("--ramp-up", type=float, default=10,
                        help="seconds over which the clients connect, at random moments")
    parser.add_argument("--submissions", type=int, default=100,
                        help="table-diffs queued for the busy phase")
    parser.add_argument("--idle-tasks", type=int, default=10,
                        help="finished tasks the idle phase polls")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="seconds between the starts of a client's polls")
    parser.add_argument("--rows", type=int, default=2000, help="rows of the diffed table")
    parser.add_argument("--caller", default="demo_caller",
                        help="the role the clients' certificate names (served on the cluster)")
    parser.add_argument("--cluster-tls", default=None,
                        help="the local cluster's tls folder (.ace-local/<cluster>/tls)")
    parser.add_argument("--api-workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--api-threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--celery-workers", type=int, default=1)
    parser.add_argument("--celery-concurrency", type=int, default=4)
    parser.add_argument("--worker-nice", type=int, default=10,
                        help="niceness of the celery workers (deploy/fleet.sh's and the "
                             "systemd unit's: 10; 0 runs them beside the API as equals)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ace-bench-api-"))
    services: Services | None = None
    try:
        build_table(Path(args.cluster_dir), args.cluster, args.rows, args.caller)
        pki = make_pki(workdir, args.caller)
        services = start_services(args, workdir, pki)
        base = f"https://127.0.0.1:{services.env['ACE_API_PORT']}"
        print("load average at the start: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
        print(f"api {args.api_workers} workers x {args.api_threads} threads, "
              f"{args.celery_workers} celery worker(s) x {args.celery_concurrency}, "
              f"{args.rows}-row table", flush=True)
        ok = run(args, base, pki, services.api_pgid)
        print("OK: no request failed and every submitted task COMPLETED" if ok
              else "NOT OK: see the failures above")
        return 0 if ok else 1
    except BenchError as exc:
        print(f"bench_api: {exc}", file=sys.stderr)
        return 2
    finally:
        if services is not None:
            services.stop()
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
