"""A fleet whose hosts share no disk: each worker and each front door has its own output folder.

They share only Redis and a PostgreSQL task store (on a test node), as hosts on
different machines would; the shared store (``SHARED_STORE``) carries the files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
from fleet_helpers import Fleet, RedisServer, fleet_env, free_port, wait_for


def task_store_url(pg_cluster: Any, dbname: str) -> str:
    """A fresh database on a real PostgreSQL node for the fleet's task store."""
    admin = psycopg2.connect(pg_cluster.admin_dsn(0))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{dbname}" OWNER "{pg_cluster.user}"')
    admin.close()
    node = pg_cluster.nodes[0]
    return f"postgresql://{pg_cluster.user}:{pg_cluster.password}@127.0.0.1:{node.port}/{dbname}"


class PrivateFleet(Fleet):
    """Workers each on an output folder of their own; ``front_env`` is a front door's."""

    def folder(self, name: str) -> Path:
        path = self.workdir / f"{name}-out"
        path.mkdir(exist_ok=True)
        return path

    def _spawn(self, name: str, celery: list[str] | None = None,
               extra_env: dict[str, str] | None = None) -> int:
        """Every worker, started or restarted, on its own folder."""
        env = {**(extra_env or {}), "ACE_OUTPUT_DIR": str(self.folder(name))}
        if celery is None:
            return super()._spawn(name, extra_env=env)
        return super()._spawn(name, celery, env)

    def front_env(self, name: str = "cli") -> dict[str, str]:
        return {"ACE_OUTPUT_DIR": str(self.folder(name))}

    def ace(self, *args: str, timeout: float = 120,
            extra_env: dict[str, str] | None = None) -> Any:
        """The CLI on a host of its own (its own output folder)."""
        return super().ace(*args, timeout=timeout,
                           extra_env={**self.front_env(), **(extra_env or {})})


@contextlib.contextmanager
def private_fleet(workdir: Path, pg_cluster: Any, dbname: str, shared_store: str = "",
                  names: tuple[str, ...] = ("w1", "w2"),
                  extra_env: dict[str, str] | None = None) -> Iterator[PrivateFleet]:
    redis = RedisServer(workdir)
    redis.start()
    env = fleet_env(redis, workdir, ACE_DATABASE_URL=task_store_url(pg_cluster, dbname),
                    ACE_SHARED_STORE=shared_store, **(extra_env or {}))
    fleet = PrivateFleet(workdir, env, names=names)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        redis.stop()


class S3Server:
    """moto's S3-compatible server in a child process, on a free port, with one bucket."""

    def __init__(self, workdir: Path, bucket: str = "ace-shared") -> None:
        self.workdir = workdir
        self.bucket = bucket
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "ace-test", "AWS_SECRET_ACCESS_KEY": "ace-test-secret",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/ace"

    def start(self) -> None:
        log = open(self.workdir / "moto.log", "ab")  # noqa: SIM115 (the server's whole life)
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, 30, "the S3 server to answer")
        with self._env():
            import fsspec
            fsspec.filesystem("s3", skip_instance_cache=True,
                              endpoint_url=self.env["AWS_ENDPOINT_URL"]).mkdir(self.bucket)

    @contextlib.contextmanager
    def _env(self) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None


@contextlib.contextmanager
def fleet_files(env: dict[str, str]) -> Iterator[None]:
    """Let this test process read a fleet's work folders as a worker would: through the
    fleet's shared store when it has one (its own folder otherwise), then forget it."""
    from ace_shared.config import load_settings
    from ace_shared.tasks import filestore

    saved = (filestore._active, filestore._local_root)
    filestore.use_shared_store(load_settings(environ=env))
    try:
        yield
    finally:
        filestore._active, filestore._local_root = saved
