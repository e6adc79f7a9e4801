"""A real Redis server and real Celery worker processes for the fleet tests.

Nothing here is a stand-in: ``redis-server`` and ``celery -A ace_workers worker``
run as child processes on free ports, each worker with its own node name and
log file, in its own process group so a test can SIGKILL a whole worker the
way a host dies. Fixtures importing this module get the environment to hand to
``ace`` subprocesses; the test process's own environment is left alone, so
tests that run the CLI in-process mode are not switched to the fleet.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CELERY = [sys.executable, "-m", "celery", "-A", "ace_workers"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """One ``redis-server`` on a free port that keeps nothing on disk and wants a password:
    the Redis whose restart loses the fleet's state, which ACE must say clearly."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        self._log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (lives as long as the server)
        if binary is None:
            pytest.fail("redis-server is not installed; run deploy/setup.sh")
        config = self.workdir / "redis.conf"  # the password in a private file, not argv
        config.touch(mode=0o600)
        config.write_text(f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
                          f"dir {self.workdir}\nrequirepass {self.password}\n")
        self.proc = subprocess.Popen([binary, str(config)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_for(self._answers, 10, "redis to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and b"ERR" not in reply:
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Fleet:
    """Celery workers (and their environment) for one test session."""

    def __init__(self, workdir: Path, env: dict[str, str], names: tuple[str, ...] = ("w1", "w2"),
                 concurrency: int = 2) -> None:
        self.workdir = workdir
        self.env = env
        self.names = names
        self.concurrency = concurrency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.redis: RedisServer | None = None  # the fleet's own, when it has one

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(self, name: str, celery: list[str] = CELERY,
                     extra_env: dict[str, str] | None = None) -> None:
        """Start worker ``name``; ``celery`` is the command that runs Celery's CLI."""
        self._await_ready(name, self._spawn(name, celery, extra_env))

    def _spawn(self, name: str, celery: list[str] = CELERY,
               extra_env: dict[str, str] | None = None) -> int:
        """Start worker ``name``'s process; return where its log stood before."""
        path = self.log_path(name)
        offset = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")  # noqa: SIM115 (the worker writes it for its whole life)
        self.procs[name] = subprocess.Popen(
            [*celery, "worker", "-n", f"{name}@%h", "-c", str(self.concurrency), "-E",
             "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=self.workdir, env={**self.env, **(extra_env or {})}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        return offset

    def _await_ready(self, name: str, offset: int) -> None:
        path = self.log_path(name)
        wait_for(lambda: "ready." in path.read_text(errors="replace")[offset:], 60,
                 f"worker {name} to be ready")

    def start(self) -> None:
        """Start every worker at once, then wait until each is ready."""
        offsets = {name: self._spawn(name) for name in self.names}
        for name, offset in offsets.items():
            self._await_ready(name, offset)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its pool processes at once, as when its host dies."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_worker(self, name: str) -> None:
        self._stop_all([name])

    def _stop_all(self, names: list[str]) -> None:
        """Ask these workers to stop all at once; SIGKILL any that does not within 20 s."""
        procs = [p for p in (self.procs.pop(n, None) for n in names)
                 if p is not None and p.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop(self) -> None:
        self._stop_all(list(self.procs))

    def ace(self, *args: str, timeout: float = 120,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the ``ace`` CLI against this fleet."""
        env = {**self.env, "ACE_NO_PROGRESS": "1", **(extra_env or {})}
        return subprocess.run([sys.executable, "-m", "ace_api", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)


def signing_key_file(workdir: Path) -> Path:
    """A task signing key of this fleet's own (mode 0600), as deploy/fleet.sh makes one."""
    path = workdir / "task-signing.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32) + "\n")
    return path


def fleet_env(redis: RedisServer, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fleet: the session's cluster and output dirs, this Redis, a key."""
    env = dict(os.environ)
    env.update({
        "ACE_TASK_SIGNING_KEY_FILE": str(signing_key_file(workdir)),
        "ACE_BROKER_URL": redis.url(0),
        "ACE_RESULT_BACKEND": redis.url(1),
        "ACE_DATABASE_URL": f"sqlite:///{workdir / 'ace_tasks.db'}",
        "PYTHONPATH": str(REPO_ROOT),
    })
    env.update(extra)
    return env


def send_as_beat(env: dict[str, str], name: str, args: list[Any]) -> None:
    """Send a task as beat does: through ACE's app, signed with the fleet's key.

    In a process of its own, with the fleet's environment, so that the key is the
    fleet's whatever other fleets this test process has talked to.
    """
    code = ("import json, sys; from ace_workers.app import app; "
            "app.send_task(sys.argv[1], args=json.loads(sys.argv[2]), queue='ace')")
    sent = subprocess.run([sys.executable, "-c", code, name, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


@contextlib.contextmanager
def own_fleet(workdir: Path, names: tuple[str, ...], concurrency: int = 2,
              pg_cluster: Any = None, **extra: str) -> Iterator[Fleet]:
    """A Redis and workers of a test module's own, so its tasks meet no other module's;
    ``extra`` adds to (or overrides) their environment.

    With ``ACE_TEST_FLEET=private`` (and ``pg_cluster`` for its task store) the workers
    share no disk, as in ``tests/private_fleet.py``.
    """
    redis = RedisServer(workdir)
    redis.start()
    if pg_cluster is not None and os.environ.get("ACE_TEST_FLEET") == "private":
        from private_fleet import PrivateFleet, task_store_url
        url = task_store_url(pg_cluster, "ace_" + re.sub(r"\W", "_", workdir.name))
        fleet: Fleet = PrivateFleet(workdir, fleet_env(
            redis, workdir, **{"ACE_DATABASE_URL": url, "ACE_SHARED_STORE": "database",
                               **extra}), names=names, concurrency=concurrency)
    else:
        fleet = Fleet(workdir, fleet_env(redis, workdir, **extra), names=names,
                      concurrency=concurrency)
    fleet.redis = redis
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        redis.stop()


T = TypeVar("T")


@contextlib.contextmanager
def started_on_own_fleets(request: pytest.FixtureRequest, pg_cluster: Any,
                          tmp_path_factory: pytest.TempPathFactory,
                          scenarios: dict[str, Callable[[Any, Fleet], T]], label: str,
                          names: tuple[str, str]) -> Iterator[dict[str, T | Exception]]:
    """Start the scenario of each selected test of the module, each on a fleet of its own.

    For tests that kill a worker and then wait out the visibility timeout: started
    together, their waits pass together. What went wrong in one scenario is kept
    and raised by its own test (:func:`scenario_of`).
    """
    selected = {item.originalname for item in request.session.items
                if isinstance(item, pytest.Function) and item.module is request.module}
    started: dict[str, T | Exception] = {}
    with contextlib.ExitStack() as fleets:
        for name, start in scenarios.items():
            if name not in selected:
                continue
            try:
                fl = fleets.enter_context(own_fleet(tmp_path_factory.mktemp(label), names,
                                                    pg_cluster=pg_cluster))
                started[name] = start(pg_cluster, fl)
            except Exception as exc:  # noqa: BLE001 (raised again by its test)
                started[name] = exc
        yield started


def scenario_of(started: dict[str, T | Exception], request: pytest.FixtureRequest) -> T:
    """The running test's scenario, or the error that starting it raised."""
    found = started[request.node.originalname]
    if isinstance(found, Exception):
        raise found
    return found


@contextlib.contextmanager
def locked(pg_cluster: Any, table: str, *nodes: int) -> Iterator[None]:
    """Hold ``table`` locked on these nodes: every query on it there waits.

    A diff plans its ranges on the node whose catalog estimates the most rows
    (n1 on a tie, as after the fixtures' ANALYZE), so a lock on n2 holds only a
    diff's batches, and a lock on every node holds its planning too, whichever
    node it plans on."""
    conns = [psycopg2.connect(pg_cluster.node_dsn(node)) for node in nodes]
    try:
        for conn in conns:
            conn.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        for conn in conns:
            conn.rollback()
            conn.close()
