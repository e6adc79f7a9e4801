"""Bounded abuse by callers: filter limits, against a real ``ace api`` and the CLI.

A filter over the size or nesting limit is refused in one sentence (400 at the
API, exit 2 at the CLI) before PostgreSQL's parser sees it: today a 120 KB
filter kills the API worker inside ``pglast`` and a 3,000-deep one is a 500.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis
import requests
from api_helpers import ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from fleet_helpers import Fleet, free_port

from ace_shared.config import load_settings
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import connect, node_targets
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.tasks.store import TaskStore

CALLER = "lim_caller"
TABLE = "public.lim_items"

HUGE = "id = 1 OR " * 12_000 + "id = 2"  # about 120 KB
DEEP = "(" * 3000 + "id = 1" + ")" * 3000
TOO_DEEP = [
    ("parentheses", "(" * 40 + "id = 1" + ")" * 40),
    ("brackets", "id = ANY(" + "ARRAY[" * 40 + "1" + "]" * 40 + ")"),
    ("functions", "id = " + "abs(" * 40 + "1" + ")" * 40),
    ("an operator chain", "id = " + " + ".join(["1"] * 1000)),
    ("a NOT chain", "NOT " * 800 + "id = 1"),
]


@pytest.fixture(scope="module")
def table(pg_cluster: Any) -> str:
    pg_cluster.serve_role(CALLER)
    for i in range(3):
        run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                f"DROP TABLE IF EXISTS {TABLE}",
                f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text)",
                f"INSERT INTO {TABLE} SELECT g, 'item ' || g FROM generate_series(1, 100) g",
                f"GRANT SELECT ON {TABLE} TO {CALLER}")
    return TABLE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    return make_certs(tmp_path_factory.mktemp("limits-certs"))


@pytest.fixture(scope="module")
def api(fleet: Fleet, pki: ApiCerts, table: str) -> Iterator[ApiServer]:
    # one worker process: a crash inside the parser would take the whole API down
    server = ApiServer(fleet.env, pki, free_port(), fleet.workdir / "api-limits.log",
                       workers=1, threads=2)
    server.start()
    yield server
    server.stop()


def _diff(api: ApiServer, table_filter: str) -> requests.Response:
    return api.session(CALLER).post(api.url("/ace/table-diff"), timeout=60, json={
        "cluster_name": "testclus", "table_name": TABLE, "table_filter": table_filter})


def _one_sentence(text: str) -> bool:
    return text.endswith(".") and ". " not in text and "Traceback" not in text


@pytest.mark.parametrize("table_filter, said", [(HUGE, "bytes"), (DEEP, "bytes")],
                         ids=["120KB", "3000-deep"])
def test_the_api_refuses_an_oversized_filter_with_400_and_keeps_serving(
        api: ApiServer, table_filter: str, said: str) -> None:
    response = _diff(api, table_filter)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert said in error and "table filter" in error and _one_sentence(error), error
    assert len(error) < 300
    # the same worker answers the next request
    ok = _diff(api, "id < 50")
    assert ok.status_code == 200, ok.text
    doc, _ = wait_for_final(api.session(CALLER),
                            api.url(f"/ace/task-status/{ok.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")


@pytest.mark.parametrize("what, table_filter", TOO_DEEP, ids=[w for w, _ in TOO_DEEP])
def test_the_api_refuses_a_filter_nested_too_deep(api: ApiServer, what: str,
                                                  table_filter: str) -> None:
    response = _diff(api, table_filter)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert "levels" in error and _one_sentence(error), error


def test_a_filter_within_the_limits_is_accepted(api: ApiServer) -> None:
    nested = "(" * 10 + "id = 1" + ")" * 10 + " OR " + " OR ".join(
        f"id = {i}" for i in range(2, 250))
    assert len(nested.encode()) < 4096
    response = _diff(api, nested)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("table_filter", [HUGE, DEEP], ids=["120KB", "3000-deep"])
def test_the_cli_refuses_an_oversized_filter_with_exit_2(fleet: Fleet, table: str,
                                                         table_filter: str) -> None:
    run = fleet.ace("table-diff", "testclus", TABLE, "--table-filter", table_filter)
    assert run.returncode == 2, run.stderr[-500:]
    last = run.stderr.strip().splitlines()[-1]
    assert "table filter" in last and "Traceback" not in run.stderr, run.stderr[-500:]


# --- "Check the table filter." only when there is one -----------------------------------------


def test_a_filter_error_hint_appears_only_when_a_filter_was_given(fleet: Fleet,
                                                                  table: str) -> None:
    with_filter = fleet.ace("table-diff", "testclus", TABLE, "--table-filter",
                            "label::int > 0")
    assert with_filter.returncode != 0
    assert "Check the table filter." in with_filter.stderr, with_filter.stderr[-500:]

    settings = load_settings()
    cluster = load_cluster(settings.cluster_dir, "testclus")
    sessions = NodeSessions(node_targets(cluster, cluster.nodes[:1], None, settings))
    try:
        with pytest.raises(AceError) as caught:
            sessions.on_one("n1", lambda cur: cur.execute(
                f"SELECT label::int FROM {TABLE}"))  # no filter: the same kind of error
    finally:
        sessions.close()
    assert "22P02" in caught.value.message and "filter" not in caught.value.message, \
        caught.value.message
    assert not isinstance(caught.value.__cause__, type(None)) and isinstance(
        caught.value.__cause__, psycopg2.Error)


# --- per-caller limits: submissions per minute, tasks running and waiting --------------------

RATE_CALLER, OTHER_CALLER = "lim_rate", "lim_other"
BUSY_CALLER, QUEUED_CALLER = "lim_busy", "lim_queued"


def _nowhere(api: ApiServer, cn: str) -> requests.Response:
    """A submission refused cheaply (unknown cluster): it still counts against the rate."""
    return api.session(cn).post(api.url("/ace/table-diff"), timeout=30, json={
        "cluster_name": "lim_nosuch", "table_name": TABLE})


def test_submissions_over_the_default_rate_get_429_per_caller_counted_in_redis(
        api: ApiServer, fleet: Fleet, pg_cluster: Any, table: str) -> None:
    for cn in (RATE_CALLER, OTHER_CALLER):
        pg_cluster.serve_role(cn)
    session = api.session(RATE_CALLER)
    answers = [session.post(api.url("/ace/table-diff"), timeout=30, json={
        "cluster_name": "lim_nosuch", "table_name": TABLE}).status_code for _ in range(61)]
    assert answers[:60] == [404] * 60, answers
    over = session.post(api.url("/ace/table-diff"), timeout=30,
                        json={"cluster_name": "testclus", "table_name": TABLE})
    assert over.status_code == 429, over.text
    error = over.json()["error"]
    assert "limit" in error and "60 per 1 minute" in error and _one_sentence(error), error
    assert int(over.headers["Retry-After"]) > 0
    assert not [r for r in TaskStore(fleet.env["ACE_DATABASE_URL"]).recent(200)
                if r.requested_by == RATE_CALLER]
    # another caller is not held back, and polls are not limited
    assert _nowhere(api, OTHER_CALLER).status_code == 404
    assert session.get(api.url("/ace/task-status/td_20240101_000000_nosuch"),
                       timeout=30).status_code == 404
    # the count lives in the broker's Redis, shared by every API process
    keys = redis.Redis.from_url(fleet.env["ACE_BROKER_URL"]).keys("*ace-api*")
    assert any(RATE_CALLER.encode() in key for key in keys), keys


def _open_tasks(fleet: Fleet, cn: str, count: int, running: bool) -> list[str]:
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    ids = []
    for i in range(count):
        task_id = f"td_20240101_000000_{cn[-4:]}{i:02d}"
        store.create(task_id, "table-diff", cluster_name="testclus", table_name=TABLE,
                     requested_by=cn, if_absent=True)
        if running:
            store.mark_running(task_id)
        ids.append(task_id)
    return ids


@pytest.mark.parametrize("cn, count, running, setting", [
    (BUSY_CALLER, 8, True, "API_MAX_ACTIVE_TASKS_PER_CALLER"),
    (QUEUED_CALLER, 32, False, "API_MAX_QUEUED_TASKS_PER_CALLER"),
], ids=["running", "waiting"])
def test_a_caller_with_the_most_open_tasks_gets_429_until_one_finishes(
        api: ApiServer, fleet: Fleet, pg_cluster: Any, table: str, cn: str, count: int,
        running: bool, setting: str) -> None:
    pg_cluster.serve_role(cn)
    run_sql(pg_cluster.admin_dsn(0, pg_cluster.dbname), f"GRANT SELECT ON {TABLE} TO {cn}")
    ids = _open_tasks(fleet, cn, count, running)
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])
    before = len([r for r in store.recent(500) if r.requested_by == cn])
    refused = _diff_as(api, cn)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert setting in error and str(count) in error and _one_sentence(error), error
    assert len([r for r in store.recent(500) if r.requested_by == cn]) == before
    store.fail(ids[0], "gone")
    assert _diff_as(api, cn).status_code == 200


def _diff_as(api: ApiServer, cn: str) -> requests.Response:
    return api.session(cn).post(api.url("/ace/table-diff"), timeout=30, json={
        "cluster_name": "testclus", "table_name": TABLE, "nodes": "n1,n2"})


# --- a caller cancels its own task ------------------------------------------------------------

CANCELLER = "lim_cancel"
LOCKED = "public.lim_locked"


def _waiting_backends(pg_cluster: Any, role: str) -> list[tuple[Any, ...]]:
    return run_sql(pg_cluster.admin_dsn(0, pg_cluster.dbname),
                   "SELECT pid, state, wait_event_type FROM pg_stat_activity "
                   "WHERE usename = %s AND state <> 'idle'", params=(role,))


def test_a_caller_cancels_its_own_blocked_diff_and_its_query_ends_on_the_node(
        api: ApiServer, fleet: Fleet, pg_cluster: Any) -> None:
    pg_cluster.serve_role(CANCELLER)
    for i in range(3):
        run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                f"DROP TABLE IF EXISTS {LOCKED}",
                f"CREATE TABLE {LOCKED} (id int PRIMARY KEY, v text)",
                f"INSERT INTO {LOCKED} SELECT g, 'v' FROM generate_series(1, 100) g",
                f"GRANT SELECT ON {LOCKED} TO {CANCELLER}")
    holder = psycopg2.connect(pg_cluster.admin_dsn(0, pg_cluster.dbname))
    try:
        with holder.cursor() as cur:
            cur.execute(f"LOCK TABLE {LOCKED} IN ACCESS EXCLUSIVE MODE")
        session = api.session(CANCELLER)
        response = session.post(api.url("/ace/table-diff"), timeout=30, json={
            "cluster_name": "testclus", "table_name": LOCKED})
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        deadline = time.monotonic() + 30
        while not any(w == "Lock" for _, _, w in _waiting_backends(pg_cluster, CANCELLER)):
            assert time.monotonic() < deadline, "the diff never waited for the lock"
            time.sleep(0.2)

        other = api.session(OTHER_CALLER).post(api.url(f"/ace/task-cancel/{task_id}"),
                                               timeout=30)
        assert other.status_code == 404, other.text

        cancelled = session.post(api.url(f"/ace/task-cancel/{task_id}"), timeout=30)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "FAILED"
        assert "cancelled" in cancelled.json()["error"]
        deadline = time.monotonic() + 20
        while _waiting_backends(pg_cluster, CANCELLER):
            assert time.monotonic() < deadline, _waiting_backends(pg_cluster, CANCELLER)
            time.sleep(0.2)
        status = session.get(api.url(f"/ace/task-status/{task_id}"), timeout=30).json()
        assert status["status"] == "FAILED" and "cancelled" in status["error"]
        again = session.post(api.url(f"/ace/task-cancel/{task_id}"), timeout=30)
        assert again.status_code == 409 and _one_sentence(again.json()["error"]), again.text
    finally:
        holder.rollback()
        holder.close()
    # the fleet still works after the cancel
    ok = session.post(api.url("/ace/table-diff"), timeout=30,
                      json={"cluster_name": "testclus", "table_name": LOCKED})
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{ok.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")


# --- callers' statements have their own, shorter timeout ---------------------------------------


def _timeouts(settings: Any, role: str | None) -> str:
    cluster = load_cluster(settings.cluster_dir, "testclus")
    conn = connect(node_targets(cluster, cluster.nodes[:1], None, settings, role=role)[0])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('statement_timeout')")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def test_a_callers_sessions_have_the_shorter_caller_statement_timeout(
        pg_cluster: Any, table: str) -> None:
    settings = load_settings()
    assert _timeouts(settings, CALLER) == "5min"
    assert _timeouts(settings, None) == "15min"  # the operator's
    short = settings.with_overrides(CALLER_STATEMENT_TIMEOUT_MS=800)
    cluster = load_cluster(short.cluster_dir, "testclus")
    sessions = NodeSessions(node_targets(cluster, cluster.nodes[:1], None, short, role=CALLER))
    started = time.monotonic()
    try:
        with pytest.raises(AceError, match="query_canceled|canceled|cancel"):
            sessions.on_one("n1", lambda cur: cur.execute("SELECT pg_catalog.pg_sleep(5)"))
    finally:
        sessions.close()
    assert time.monotonic() - started < 4
