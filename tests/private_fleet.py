"""A fleet whose hosts share no disk: each worker and each front door has its own output folder.

They share only Redis and a PostgreSQL task store (on a test node), as hosts on
different machines would; the shared store (``SHARED_STORE``) carries the files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
from fleet_helpers import Fleet, RedisServer, fleet_env


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

    def start(self) -> None:
        offsets = {name: self._spawn(name, extra_env={"ACE_OUTPUT_DIR": str(self.folder(name))})
                   for name in self.names}
        for name, offset in offsets.items():
            self._await_ready(name, offset)

    def restart_worker(self, name: str) -> None:
        self.start_worker(name, extra_env={"ACE_OUTPUT_DIR": str(self.folder(name))})

    def front_env(self, name: str = "cli") -> dict[str, str]:
        return {"ACE_OUTPUT_DIR": str(self.folder(name))}

    def ace(self, *args: str, timeout: float = 120,  # type: ignore[override]
            extra_env: dict[str, str] | None = None) -> Any:
        """The CLI on a host of its own (its own output folder)."""
        return super().ace(*args, timeout=timeout,
                           extra_env={**self.front_env(), **(extra_env or {})})


@contextlib.contextmanager
def private_fleet(workdir: Path, pg_cluster: Any, dbname: str, shared_store: str = "",
                  names: tuple[str, ...] = ("w1", "w2")) -> Iterator[PrivateFleet]:
    redis = RedisServer(workdir)
    redis.start()
    env = fleet_env(redis, workdir, ACE_DATABASE_URL=task_store_url(pg_cluster, dbname),
                    ACE_SHARED_STORE=shared_store)
    fleet = PrivateFleet(workdir, env, names=names)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        redis.stop()
