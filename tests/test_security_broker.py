"""The broker is not a trust boundary (issue 21, escape 5).

Someone who can write to Redis must not be able to make a worker act as ACE:
a queued message altered in Redis, a message forged there, or a message whose
arguments differ from what the task store recorded for its id is refused,
said so in one line of the worker's log, and the task it names shows FAILED.
Everything runs on a real Redis and a real Celery worker: the messages are
queued while no worker runs, then one worker starts and meets them all.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import requests
from celery import Celery
from fleet_helpers import Fleet, RedisServer, fleet_env, free_port, wait_for

from ace_shared.tasks.store import COMPLETED, FAILED, TaskStore, record_submission

QUEUE = "ace"
OPEN, SECRET = "public.sb_open", "public.sb_secret"


def _exec_all(pg_cluster: Any, statements: list[str]) -> None:
    for i in range(3):
        with psycopg2.connect(pg_cluster.node_dsn(i)) as conn, conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
        conn.close()


def _submit(env: dict[str, str], task_id: str, options: dict[str, Any],
            requested_by: str | None) -> subprocess.CompletedProcess[str]:
    """Submit as the API and the CLI do (``ace_workers.client.submit``), in a process of its own."""
    code = ("import json, sys\n"
            "from ace_shared.config import load_settings\n"
            "from ace_workers.client import submit\n"
            "opts = json.loads(sys.argv[2])\n"
            "submit('table-diff', opts, sys.argv[1], load_settings(),"
            " cluster_name=opts['cluster_name'], table_name=opts['table_name'],"
            " requested_by=sys.argv[3] or None)\n")
    return subprocess.run([sys.executable, "-c", code, task_id, json.dumps(options),
                           requested_by or ""], env=env, capture_output=True, text=True,
                          timeout=60)


def _send_signed(env: dict[str, str], task_id: str, options: dict[str, Any],
                 submission: dict[str, Any]) -> None:
    """Send a message through ACE's own app (signed when ACE signs), recording nothing."""
    code = ("import json, sys; from ace_workers.app import app; "
            "app.send_task('ace.table_diff', args=[json.loads(sys.argv[2])], task_id=sys.argv[1], "
            "kwargs={'submission': json.loads(sys.argv[3])})")
    sent = subprocess.run([sys.executable, "-c", code, task_id, json.dumps(options),
                           json.dumps(submission)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert sent.returncode == 0, sent.stderr


def _tamper(client: redis.Redis, task_id: str, change: Any) -> None:
    """Rewrite the queued message of ``task_id`` in place, as an attacker with Redis access can."""
    for index, raw in enumerate(client.lrange(QUEUE, 0, -1)):
        envelope = json.loads(raw)
        if envelope["headers"].get("id") != task_id:
            continue
        body = json.loads(base64.b64decode(envelope["body"]))
        change(body)
        envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        client.lset(QUEUE, index, json.dumps(envelope))
        return
    raise AssertionError(f"no queued message for {task_id}")


def _submission(table: str, by: str | None) -> dict[str, Any]:
    return {"task_type": "table-diff", "cluster_name": "testclus", "table_name": table,
            "requested_by": by, "submitted_at": "2030-01-01T00:00:00+00:00"}


@dataclass
class Held:
    """One worker that met every queued message below when it started."""

    fleet: Fleet
    store: TaskStore
    legit: str  # an ordinary submission: still runs
    tampered: str  # a caller's diff whose queued message was rewritten
    forged_new: str  # a message forged in Redis under an id nobody submitted
    forged_known: str  # a forged message naming a task the store recorded
    mismatch: str  # a message from ACE whose arguments are not what was recorded


def _finished_or_refused(held_fleet: Fleet, store: TaskStore, task_id: str) -> bool:
    rec = store.get(task_id)
    if rec is not None and rec.status in (COMPLETED, FAILED):
        return True
    return any(task_id in line and "ejected" in line
               for line in held_fleet.log("b1").splitlines())


@pytest.fixture(scope="module")
def held(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    _exec_all(pg_cluster, [
        "DROP TABLE IF EXISTS sb_open, sb_secret",
        "CREATE TABLE sb_open (id int PRIMARY KEY, v text)",
        "INSERT INTO sb_open SELECT g, 'open ' || g FROM generate_series(1, 200) g",
        "CREATE TABLE sb_secret (id int PRIMARY KEY, salary int)",
        "INSERT INTO sb_secret SELECT g, g * 1000 FROM generate_series(1, 300) g",
    ])
    workdir = tmp_path_factory.mktemp("broker")
    server = RedisServer(workdir)
    server.start()
    fl = Fleet(workdir, fleet_env(server, workdir), names=("b1",), concurrency=1)
    store = TaskStore(fl.env["ACE_DATABASE_URL"])
    client = redis.Redis.from_url(fl.env["ACE_BROKER_URL"])
    ids = Held(fl, store, "td_20300101_000000_legit1", "td_20300101_000000_tamper",
               "td_20300101_000000_forged", "td_20300101_000000_known1",
               "td_20300101_000000_mismat")
    try:
        res = _submit(fl.env, ids.legit, {"cluster_name": "testclus", "table_name": OPEN}, None)
        assert res.returncode == 0, res.stderr
        # a caller's diff, as the API queues it: her role, her table
        res = _submit(fl.env, ids.tampered, {"cluster_name": "testclus", "table_name": OPEN,
                                             "role": "sb_caller"}, "sb_caller")
        assert res.returncode == 0, res.stderr

        def to_secret(body: Any) -> None:
            body[0][0].pop("role", None)
            body[0][0]["table_name"] = SECRET
        _tamper(client, ids.tampered, to_secret)

        # forged from scratch by anyone who can reach Redis, with Celery's own client
        forger = Celery(broker=fl.env["ACE_BROKER_URL"])
        forger.send_task("ace.table_diff", task_id=ids.forged_new, queue=QUEUE,
                         args=[{"cluster_name": "testclus", "table_name": SECRET}],
                         kwargs={"submission": _submission(SECRET, "sb_caller")})
        known = {"cluster_name": "testclus", "table_name": OPEN, "role": "sb_caller"}
        record_submission(store, ids.forged_known, known, _submission(OPEN, "sb_caller"))
        forger.send_task("ace.table_diff", task_id=ids.forged_known, queue=QUEUE,
                         args=[{"cluster_name": "testclus", "table_name": SECRET}],
                         kwargs={"submission": _submission(OPEN, "sb_caller")})

        # recorded for one table as a caller, sent by ACE's own app for another as ACE
        record_submission(store, ids.mismatch, known, _submission(OPEN, "sb_caller"))
        _send_signed(fl.env, ids.mismatch, {"cluster_name": "testclus", "table_name": SECRET},
                     _submission(OPEN, "sb_caller"))

        fl.start()
        for task_id in (ids.legit, ids.tampered, ids.forged_new, ids.forged_known, ids.mismatch):
            wait_for(lambda t=task_id: _finished_or_refused(fl, store, t), 90,
                     f"the worker to run or refuse {task_id}", interval=0.2)
        yield ids
    finally:
        fl.stop()
        server.stop()


def _rejections(held: Held, task_id: str) -> list[str]:
    return [line for line in held.fleet.log("b1").splitlines()
            if task_id in line and "ejected" in line]


def test_an_ordinary_submission_still_runs(held: Held) -> None:
    rec = held.store.get(held.legit)
    assert rec is not None and rec.status == COMPLETED, rec and rec.error


def test_a_message_altered_in_redis_is_rejected_and_its_task_fails(held: Held) -> None:
    rec = held.store.get(held.tampered)
    assert rec is not None
    assert rec.status == FAILED, f"the altered message ran: {rec.status} {rec.result}"
    assert rec.result is None
    assert "rejected" in (rec.error or "") and "sb_secret" not in (rec.error or "")
    lines = _rejections(held, held.tampered)
    assert len(lines) == 1, held.fleet.log("b1")
    # one line, not followed by a traceback or a dump of the message
    log = held.fleet.log("b1").splitlines()
    after = log[log.index(lines[0]) + 1:][:1]
    assert all(line.startswith("[") for line in after), after
    assert "salary" not in held.fleet.log("b1")


def test_a_message_forged_in_redis_runs_nothing(held: Held) -> None:
    rec = held.store.get(held.forged_new)
    assert rec is None, f"the forged message ran: {rec and (rec.status, rec.result)}"
    assert len(_rejections(held, held.forged_new)) == 1
    assert not list((Path(held.fleet.env["ACE_OUTPUT_DIR"])).rglob(f"*{held.forged_new}*"))


def test_a_forged_message_naming_a_recorded_task_fails_that_task(held: Held) -> None:
    rec = held.store.get(held.forged_known)
    assert rec is not None and rec.status == FAILED, rec and (rec.status, rec.result)
    assert rec.result is None and "rejected" in (rec.error or "")
    assert len(_rejections(held, held.forged_known)) == 1


def test_a_message_that_differs_from_the_recorded_submission_is_refused(held: Held) -> None:
    rec = held.store.get(held.mismatch)
    assert rec is not None and rec.status == FAILED, rec and (rec.status, rec.result)
    assert rec.result is None
    assert "does not match what was submitted" in (rec.error or "")


def test_a_worker_without_a_signing_key_refuses_to_start(held: Held) -> None:
    env = {k: v for k, v in held.fleet.env.items()
           if k not in ("ACE_TASK_SIGNING_KEY", "ACE_TASK_SIGNING_KEY_FILE")}
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "ace_workers", "worker",
                             "-n", "nokey@%h", "-c", "1", "--without-mingle", "--without-gossip"],
                            cwd=held.fleet.workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("a worker without a signing key started")
    assert proc.returncode != 0
    said = [line for line in (err + out).splitlines() if line.strip()]
    # (as root Celery warns first, of that)
    assert said and said[-1].startswith("ace: error: No task signing key"), err + out
    assert "ACE_TASK_SIGNING_KEY_FILE" in said[-1] and "Traceback" not in err + out


def test_a_submission_without_a_signing_key_is_refused_and_queues_nothing(held: Held) -> None:
    client = redis.Redis.from_url(held.fleet.env["ACE_BROKER_URL"])
    before = client.llen(QUEUE)
    res = held.fleet.ace("table-diff", "testclus", OPEN, "--no-wait",
                         extra_env={"ACE_TASK_SIGNING_KEY_FILE": "", "ACE_TASK_SIGNING_KEY": ""})
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "signing key" in lines[0], res.stderr
    assert client.llen(QUEUE) == before


def test_the_tests_redis_wants_a_password(held: Held) -> None:
    port = int(held.fleet.env["ACE_BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()


LEAKED = "s3cr3t-4242"  # a row value that a server error would quote


def test_a_failed_task_shows_no_server_text_or_row_values(held: Held, pg_cluster: Any) -> None:
    """What Flower (task events), the result backend and task-status show of a failure."""
    _exec_all(pg_cluster, ["DROP TABLE IF EXISTS sb_leak",
                           "CREATE TABLE sb_leak (id int PRIMARY KEY, v text)",
                           f"INSERT INTO sb_leak VALUES (1, '{LEAKED}')"])
    fl = held.fleet
    events: list[dict[str, Any]] = []
    listening = threading.Event()
    app = Celery(broker=fl.env["ACE_BROKER_URL"])
    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": events.append})
        thread = threading.Thread(
            target=lambda: (listening.set(), receiver.capture(limit=None, wakeup=False)),
            daemon=True)
        thread.start()
        listening.wait(5)
        time.sleep(0.5)  # the receiver's queue is bound once it consumes
        # the cast fails on the row's value, and the server's message quotes it
        res = fl.ace("table-diff", "testclus", "public.sb_leak", "--table-filter=v::int > 0")
        found = re.search(r"Submitted (td_\S+)", res.stderr)
        assert res.returncode == 2 and found, res.stdout + res.stderr
        task_id = found.group(1)
        try:
            wait_for(lambda: any(e.get("type") == "task-failed"
                                 and str(e.get("uuid", "")).startswith(task_id)
                                 for e in list(events)), 15, "the task-failed event")
        finally:
            receiver.should_stop = True
            thread.join(10)
    rec = held.store.get(task_id)
    assert rec is not None and rec.status == FAILED
    failed = [e for e in events if e.get("type") == "task-failed"]
    shown = {
        "cli": res.stdout + res.stderr,
        "task-status": json.dumps(rec.status_document()),
        "events": json.dumps(failed, default=str),
        "result backend": " ".join(
            str(value) for value in _redis_values(redis.Redis.from_url(
                fl.env["ACE_RESULT_BACKEND"]))),
    }
    assert "A query failed on node" in shown["events"]  # the sentence, not the server's text
    for where, text in shown.items():
        assert LEAKED not in text, where
        assert "invalid input syntax" not in text, where


def _redis_values(client: redis.Redis) -> list[bytes]:
    values: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values.append(client.get(key) or b"")
        elif kind == b"list":
            values.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            values.extend(client.hgetall(key).values())
    return values


def test_fleet_sh_runs_redis_with_a_password_and_flower_behind_one(
        held: Held, tmp_path: Path, repo_root: Path) -> None:
    """deploy/fleet.sh as a user runs it: its own Redis, a signing key, Flower with a login."""
    ports = {"ACE_REDIS_PORT": free_port(), "ACE_FLOWER_PORT": free_port(),
             "ACE_API_PORT": free_port()}
    env = {k: v for k, v in os.environ.items()
           if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND", "ACE_DATABASE_URL",
                        "ACE_TASK_SIGNING_KEY_FILE", "ACE_TASK_SIGNING_KEY")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(ACE_FLEET_DIR=str(tmp_path / "fleet"), ACE_OUTPUT_DIR=str(tmp_path / "out"))
    fleet_sh = ["bash", str(repo_root / "deploy/fleet.sh")]
    local = repo_root / ".ace-local"
    try:
        started = subprocess.run([*fleet_sh, "start", "--workers", "1", "--concurrency", "1"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        password = (local / "redis.password").read_text().strip()
        flower_password = (local / "flower.password").read_text().strip()
        for secret in ("redis.password", "flower.password", "task-signing.key"):
            assert (local / secret).stat().st_mode & 0o077 == 0, secret
        # the Redis password is never printed; the export reads it from its file
        assert password not in started.stdout
        assert "$(cat " in started.stdout

        port = ports["ACE_REDIS_PORT"]
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        assert redis.Redis(host="127.0.0.1", port=port, password=password).ping()

        flower = f"http://127.0.0.1:{ports['ACE_FLOWER_PORT']}/api/workers"

        def flower_answers() -> bool:
            try:
                return requests.get(flower, timeout=2).status_code == 401
            except requests.ConnectionError:
                return False
        wait_for(flower_answers, 30, "flower to answer")
        assert requests.get(flower, auth=("ace", "wrong"), timeout=5).status_code == 401
        assert requests.get(flower, auth=("ace", flower_password), timeout=5).status_code == 200
        pid = int((tmp_path / "fleet" / "flower.pid").read_text())
        flower_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"ACE_TASK_SIGNING_KEY") for v in flower_env)
        assert flower_password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

        # the CLI, with the exports fleet.sh printed, gets its diff from the fleet's worker
        wait_for(lambda: "ready." in (tmp_path / "fleet" / "w1.log").read_text(), 60,
                 "the worker to be ready")
        cli = {**env, "ACE_NO_PROGRESS": "1",
               "ACE_BROKER_URL": f"redis://:{password}@127.0.0.1:{port}/0",
               "ACE_TASK_SIGNING_KEY_FILE": str(local / "task-signing.key"),
               "ACE_DATABASE_URL": f"sqlite:///{tmp_path / 'out' / 'ace_tasks.db'}"}
        diff = subprocess.run([sys.executable, "-m", "ace_api", "table-diff", "testclus", OPEN],
                              env=cli, capture_output=True, text=True, timeout=120)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert "Submitted td_" in diff.stderr
    finally:
        subprocess.run([*fleet_sh, "stop"], env=env, capture_output=True, timeout=60)


def _look(cur: Any) -> tuple[Any, ...]:
    """What one step could notice of the steps before it on the same connection."""
    cur.execute(
        "SELECT pg_backend_pid(), session_user, current_user, current_setting('work_mem'), "
        "coalesce(current_setting('ace.probe', true), ''), "
        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        " AND pid = pg_backend_pid()), to_regclass('pg_temp.sb_pool_tmp') IS NOT NULL, "
        "current_setting('transaction_read_only'), current_setting('statement_timeout'), "
        "current_setting('search_path'), current_setting('row_security'), "
        "current_setting('TimeZone'), current_setting('DateStyle')")
    return tuple(cur.fetchone())


def _leave_traces(cur: Any) -> int:
    """A step that takes a session lock, sets settings and a role, makes a temp table."""
    cur.execute("SELECT pg_backend_pid()")
    pid = int(cur.fetchone()[0])
    cur.execute("SELECT pg_advisory_lock(424242)")
    cur.execute("SELECT set_config('ace.probe', 'left behind', false)")
    cur.execute("SET work_mem = '7MB'")
    if not cur.connection.readonly:
        cur.execute("CREATE TEMP TABLE sb_pool_tmp (x int)")
    cur.execute("SET ROLE sb_pool_role")
    cur.connection.commit()  # as a repair commits: SET and SET ROLE outlive the transaction
    return pid


@pytest.mark.parametrize("readonly", [False, True], ids=["writing", "reading"])
def test_a_pooled_connection_keeps_nothing_of_the_step_before(pg_cluster: Any,
                                                              readonly: bool) -> None:
    from ace_shared.config import load_settings
    from ace_shared.nodes.cluster import load_cluster
    from ace_shared.nodes.connection import node_targets
    from ace_shared.nodes.sessions import NodeSessions

    settings = load_settings()
    cluster = load_cluster(settings.cluster_dir, "testclus")
    targets = node_targets(cluster, cluster.nodes[:1], None, settings)
    with psycopg2.connect(pg_cluster.admin_dsn(0, targets[0].dbname)) as c, \
            c.cursor() as cur:
        cur.execute("DO $$ BEGIN CREATE ROLE sb_pool_role; EXCEPTION WHEN duplicate_object "
                    "THEN NULL; END $$")
        cur.execute(f'GRANT sb_pool_role TO "{targets[0].user}"')
    c.close()
    fresh = NodeSessions(targets, readonly=readonly)
    try:
        expected = fresh.on_one(targets[0].node, _look)[1:]
    finally:
        fresh.close()
    pooled = NodeSessions(targets, readonly=readonly)
    try:
        pid = pooled.on_one(targets[0].node, _leave_traces)
        seen = pooled.on_one(targets[0].node, _look)
    finally:
        pooled.close()
    assert seen[0] == pid  # the same pooled connection
    assert seen[1:] == expected


def test_every_task_of_aces_app_checks_signatures_and_hides_server_text() -> None:
    """Celery's own tasks (chords, cleanup) included: a forged message finds no way in."""
    from ace_workers.app import make_app
    from ace_workers.base import VisibleTask

    app = make_app()
    app.loader.import_default_modules()
    app.finalize()
    assert len(app.tasks) > 20
    assert {name for name, task in app.tasks.items()
            if task.Strategy != "ace_workers.fleet.signing:verified_strategy"
            or not isinstance(task, VisibleTask)} == set()
