"""The task store on the URLs the documentation gives: SQLite files and PostgreSQL."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from ace_shared.config import Settings
from ace_shared.tasks.store import (
    COMPLETED,
    TaskStore,
    default_database_url,
    engine_url,
    record_submission,
)

ROW = {"task_type": "table-diff", "cluster_name": "c", "table_name": "public.t",
       "requested_by": "alice", "submitted_at": "2030-01-01T00:00:00+00:00"}


def test_postgresql_urls_open_with_psycopg2() -> None:
    assert engine_url("postgresql://u:p%40w@h:5/db") == "postgresql+psycopg2://u:p%40w@h:5/db"
    assert engine_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert engine_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert engine_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.fixture(scope="module")
def pg_store_url(pg_cluster: Any) -> str:
    """A fresh database on a real PostgreSQL node, as the README's ACE_DATABASE_URL names one."""
    admin = psycopg2.connect(pg_cluster.admin_dsn(0))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS ace_taskstore")
        cur.execute(f'CREATE DATABASE ace_taskstore OWNER "{pg_cluster.user}"')
    admin.close()
    node = pg_cluster.nodes[0]
    return (f"postgresql://{pg_cluster.user}:{pg_cluster.password}@127.0.0.1:{node.port}"
            "/ace_taskstore")


def test_a_postgresql_url_as_documented_stores_tasks(pg_store_url: str) -> None:
    store = TaskStore(pg_store_url)
    assert record_submission(store, "td_pg1", {"nodes": "all"}, ROW)
    store.mark_running("td_pg1")
    assert store.complete("td_pg1", {"diff_file": "x.json"})
    rec = TaskStore(pg_store_url).get("td_pg1")
    assert rec is not None and rec.status == COMPLETED and rec.result == {"diff_file": "x.json"}


def _open_pg(url: str, barrier: Any, failures: Any) -> None:
    TaskStore._engines.clear()  # a fresh process, as a worker starting on another host
    barrier.wait()
    try:
        TaskStore(url).get("nothing")
    except Exception as exc:
        failures.put(repr(exc))


def test_processes_creating_the_postgresql_table_at_once_all_succeed(pg_cluster: Any) -> None:
    admin = psycopg2.connect(pg_cluster.admin_dsn(0))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS ace_taskstore_race")
        cur.execute(f'CREATE DATABASE ace_taskstore_race OWNER "{pg_cluster.user}"')
    admin.close()
    url = (f"postgresql://{pg_cluster.user}:{pg_cluster.password}@127.0.0.1:"
           f"{pg_cluster.nodes[0].port}/ace_taskstore_race")
    ctx = multiprocessing.get_context("fork")
    failures, barrier = ctx.Queue(), ctx.Barrier(5)
    procs = [ctx.Process(target=_open_pg, args=(url, barrier, failures)) for _ in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert failures.empty(), failures.get()


def test_fleet_sh_and_the_defaults_agree_on_where_the_task_store_is(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = (Path(__file__).resolve().parent.parent / "deploy" / "fleet.sh").read_text()
    assert "ACE_DATABASE_URL=${ACE_DATABASE_URL:-sqlite:///$ACE_OUTPUT_DIR/ace_tasks.db}" in script
    assert default_database_url(Settings(OUTPUT_DIR=str(tmp_path))) == (
        f"sqlite:///{tmp_path}/ace_tasks.db")
