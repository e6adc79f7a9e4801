"""No query outlives its job, and every session carries ACE's limits by default.

Checked at the defaults users have: a statement timeout, a lock timeout and an
idle-in-transaction timeout are set without any configuration; closing a job's
sessions cancels what they run; a client that dies (a killed worker) has its
query cancelled by the server itself; Ctrl-C on the CLI stops the nodes' work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg2
import pytest
from api_helpers import run_sql

from ace_shared.config import load_settings
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import node_targets
from ace_shared.nodes.sessions import NodeSessions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _targets(role: str | None = None) -> Any:
    settings = load_settings()
    cluster = load_cluster(settings.cluster_dir, "testclus")
    return node_targets(cluster, cluster.nodes, None, settings, role)


def _running(cluster: Any, needle: str) -> list[tuple[Any, ...]]:
    return run_sql(cluster.admin_dsn(0), "SELECT pid, state, wait_event_type FROM "
                   "pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                   params=(f"%{needle}%",))


def _waits_for_lock(cluster: Any, node: int, table: str) -> bool:
    """Whether an ACE session waits for a lock on ``table`` (not on anything else)."""
    ((db, rel),) = run_sql(cluster.node_dsn(node), "SELECT (SELECT oid FROM pg_database "
                           "WHERE datname = current_database()), to_regclass(%s)::oid",
                           params=(table,))
    rows = run_sql(cluster.admin_dsn(node), "SELECT count(*) FROM pg_locks l "
                   "JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted "
                   "AND l.database = %s AND l.relation = %s AND a.application_name = 'ace'",
                   params=(db, rel))
    return rows[0][0] > 0


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_every_session_has_the_default_limits(pg_cluster: Any) -> None:
    sessions = NodeSessions(_targets())
    try:
        shown = sessions.on_all(lambda cur: (cur.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
            "current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('row_security'), "
            "current_setting('client_connection_check_interval')"), cur.fetchone())[1])
    finally:
        sessions.close()
    assert set(shown.values()) == {("15min", "1min", "30min", "off", "10s")}


def test_a_served_role_logs_in_as_itself(pg_cluster: Any) -> None:
    pg_cluster.serve_role("sec_session_role")
    sessions = NodeSessions(_targets("sec_session_role"))
    try:
        who = sessions.on_all(lambda cur: (cur.execute(
            "SELECT session_user, current_user, current_setting('is_superuser')"),
            cur.fetchone())[1])
    finally:
        sessions.close()
    assert set(who.values()) == {("sec_session_role", "sec_session_role", "off")}


def test_a_role_ace_may_not_log_in_as_is_refused_in_one_sentence(pg_cluster: Any) -> None:
    run_sql(pg_cluster.admin_dsn(0), "DO $$ BEGIN CREATE ROLE sec_unserved LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    sessions = NodeSessions(_targets("sec_unserved"))
    try:
        with pytest.raises(AceError, match="cannot log in as role sec_unserved") as err:
            sessions.on_one("n1", lambda cur: cur.execute("SELECT 1"))
    finally:
        sessions.close()
    assert "docs/security.md" in str(err.value)


def test_closing_a_jobs_sessions_cancels_the_query_it_runs(pg_cluster: Any) -> None:
    sessions = NodeSessions(_targets())
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            sessions.on_one("n1", lambda cur: cur.execute("SELECT pg_sleep(120) -- sec-close"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    _wait_for(lambda: _running(pg_cluster, "sec-close"), 20, "the query to start")
    started = time.monotonic()
    sessions.close()
    worker.join(20)
    assert time.monotonic() - started < 10
    assert outcome and isinstance(outcome[0], AceError)
    assert "SQLSTATE 57014" in str(outcome[0])
    _wait_for(lambda: not _running(pg_cluster, "sec-close"), 10, "the query to go")


def test_the_server_cancels_the_query_of_a_killed_client(pg_cluster: Any) -> None:
    """A worker killed by a revoke (or the OOM killer) leaves no query running for long."""
    script = (
        "from ace_shared.config import load_settings\n"
        "from ace_shared.nodes.cluster import load_cluster\n"
        "from ace_shared.nodes.connection import connect, node_targets\n"
        "s = load_settings(); c = load_cluster(s.cluster_dir, 'testclus')\n"
        "conn = connect(node_targets(c, c.nodes, None, s)[0])\n"
        "conn.cursor().execute('SELECT pg_sleep(300) -- sec-killed')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": REPO})
    try:
        _wait_for(lambda: _running(pg_cluster, "sec-killed"), 30, "the query to start")
    finally:
        child.kill()
        child.wait(10)
    _wait_for(lambda: not _running(pg_cluster, "sec-killed"), 30,
              "the server to cancel the orphaned query")


def test_ctrl_c_on_the_cli_stops_the_nodes_work(pg_cluster: Any) -> None:
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS sec_locked",
                "CREATE TABLE sec_locked (id int PRIMARY KEY, label text)",
                "INSERT INTO sec_locked SELECT g, 'x' FROM generate_series(1, 100) g")
    holder = psycopg2.connect(pg_cluster.node_dsn(0))
    env = {k: v for k, v in os.environ.items() if k != "ACE_BROKER_URL"}
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE sec_locked IN ACCESS EXCLUSIVE MODE")
        cli = subprocess.Popen([sys.executable, "-m", "ace_api", "table-diff", "testclus",
                                "public.sec_locked"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**env, "PYTHONPATH": REPO,
                                                            "ACE_NO_PROGRESS": "1"})

        def waiting() -> bool:
            return _waits_for_lock(pg_cluster, 0, "sec_locked")
        _wait_for(waiting, 30, "the CLI's query to wait for the lock")
        started = time.monotonic()
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=20)
        assert time.monotonic() - started < 10
        assert cli.returncode == 2, stderr
        assert b"interrupted" in stderr
        _wait_for(lambda: not waiting(), 10, "the CLI's query to be cancelled")
    finally:
        holder.rollback()
        holder.close()


def test_the_password_route_logs_in_with_the_roles_own_password(pg_cluster: Any,
                                                                 tmp_path: Any) -> None:
    """Without certificates: each served role's own password in ACE's passfile."""
    for i in range(3):
        run_sql(pg_cluster.admin_dsn(i), "DO $$ BEGIN CREATE ROLE sec_pw_role LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                "ALTER ROLE sec_pw_role PASSWORD 'sec pw'")
    passfile = tmp_path / "pgpass"
    passfile.write_text("127.0.0.1:*:*:sec_pw_role:sec pw\n")
    passfile.chmod(0o600)
    settings = load_settings().with_overrides(USE_CERT_AUTH=False, ROLE_PASSFILE=str(passfile))
    cluster = load_cluster(settings.cluster_dir, "testclus")
    targets = node_targets(cluster, cluster.nodes, None, settings, "sec_pw_role")
    assert all(not t.password for t in targets)  # the cluster file's password is never sent
    sessions = NodeSessions(targets)
    try:
        who = sessions.on_all(lambda cur: (cur.execute("SELECT session_user"), cur.fetchone())[1])
    finally:
        sessions.close()
    assert set(who.values()) == {("sec_pw_role",)}


def test_ctrl_c_during_a_repair_stops_every_nodes_work(pg_cluster: Any) -> None:
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS sec_locked_fix",
                "CREATE TABLE sec_locked_fix (id int PRIMARY KEY, label text)",
                "INSERT INTO sec_locked_fix SELECT g, 'x' FROM generate_series(1, 100) g")
    run_sql(pg_cluster.node_dsn(1), "UPDATE sec_locked_fix SET label = 'y' WHERE id < 5")
    env = {k: v for k, v in os.environ.items() if k != "ACE_BROKER_URL"}
    env.update(PYTHONPATH=REPO, ACE_NO_PROGRESS="1")
    ace = [sys.executable, "-m", "ace_api"]
    diff = subprocess.run([*ace, "table-diff", "testclus", "public.sec_locked_fix"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert diff.returncode == 1, diff.stderr
    diff_file = diff.stdout.split("Diffs written to ")[1].split()[0]
    holder = psycopg2.connect(pg_cluster.node_dsn(1))
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE sec_locked_fix IN ACCESS EXCLUSIVE MODE")
        cli = subprocess.Popen([*ace, "table-repair", "testclus", "public.sec_locked_fix",
                                "--diff-file", diff_file, "--source-of-truth", "n1"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def waiting() -> bool:
            return _waits_for_lock(pg_cluster, 1, "sec_locked_fix")
        _wait_for(waiting, 30, "the repair to wait for the lock")
        started = time.monotonic()
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=20)
        assert time.monotonic() - started < 10
        assert cli.returncode == 2, stderr
        _wait_for(lambda: not waiting(), 10, "the repair's query to be cancelled")
    finally:
        holder.rollback()
        holder.close()
    labels = run_sql(pg_cluster.node_dsn(1), "SELECT count(*) FROM sec_locked_fix "
                     "WHERE label = 'y'")
    assert labels == [(4,)]  # nothing was changed


def test_a_cancel_sent_between_two_statements_still_stops_the_job(pg_cluster: Any) -> None:
    """A thread that was between statements (or connecting) when the cancel was sent
    does not start its next statement and wait out the lock timeout (a minute)."""
    run_sql(pg_cluster.node_dsn(0), "DROP TABLE IF EXISTS sec_between",
            "CREATE TABLE sec_between (id int)")
    holder = psycopg2.connect(pg_cluster.node_dsn(0))
    sessions = NodeSessions(_targets()[:1])
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE sec_between IN ACCESS EXCLUSIVE MODE")

        def two_statements(cur: Any) -> None:
            cur.execute("SELECT 1")
            time.sleep(1)  # the cancel arrives here, while no statement runs
            cur.execute("SELECT count(*) FROM public.sec_between")

        def run_job() -> None:
            with contextlib.suppress(AceError):
                sessions.on_all(two_statements)

        job = threading.Thread(target=run_job)
        job.start()
        time.sleep(0.5)
        started = time.monotonic()
        sessions.cancel()
        sessions.close()
        job.join(10)
        assert not job.is_alive() and time.monotonic() - started < 10
        assert not _waits_for_lock(pg_cluster, 0, "sec_between")
    finally:
        holder.rollback()
        holder.close()
        sessions.close()

