"""table-diff on a real Celery fleet: two workers, a real Redis, the test cluster's nodes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.events.state import State
from diff_helpers import on_every_node
from fleet_helpers import Fleet, free_port, own_fleet, wait_for
from node_sql import run_sql

from ace_shared.tasks.store import COMPLETED, FAILED, RUNNING, TaskStore, record_submission

TABLE = "fl_items"
ROWS = 30000


@pytest.fixture(scope="module")
def items(pg_cluster):  # type: ignore[no-untyped-def]
    """``public.fl_items`` with scattered differences on n2 and n3."""
    on_every_node(pg_cluster, [
        f"DROP TABLE IF EXISTS {TABLE}",
        f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text, amount numeric(10,2), "
        "at timestamptz, tags text[])",
        f"INSERT INTO {TABLE} SELECT g, 'item ' || g, g * 0.25, "
        "'2024-01-01 00:00+00'::timestamptz + g * interval '1 minute', ARRAY['t' || g % 7] "
        f"FROM generate_series(1, {ROWS}) g",
        f"ANALYZE {TABLE}",
    ])
    run_sql(pg_cluster.node_dsn(1), f"UPDATE {TABLE} SET label = 'changed' WHERE id % 5003 = 0")
    run_sql(pg_cluster.node_dsn(1), f"DELETE FROM {TABLE} WHERE id IN (17, 29999)")
    run_sql(pg_cluster.node_dsn(2), f"INSERT INTO {TABLE} VALUES (0, 'below', 1, now(), NULL), "
                         f"({ROWS + 50}, 'above', 1, '2030-01-01', '{{}}')")
    run_sql(pg_cluster.node_dsn(2), f"UPDATE {TABLE} SET tags = NULL WHERE id = 12345")
    return f"public.{TABLE}"


def _diff_file(stdout: str) -> Path:
    match = re.search(r"(?:Diffs|Diff summary) written to (\S+)", stdout)
    assert match, stdout
    return Path(match.group(1))


def _local_env(fl: Fleet) -> dict[str, str]:
    return {k: v for k, v in fl.env.items() if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}


def _run_local(fl: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**_local_env(fl), "ACE_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "ace_api", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _store(fl: Fleet) -> TaskStore:
    return TaskStore(fl.env["ACE_DATABASE_URL"])


def test_fleet_diff_spreads_over_both_workers_and_equals_in_process(fleet, items):
    before = {n: fleet.log(n).count("ace.diff_ranges") for n in fleet.names}
    res = fleet.ace("table-diff", "testclus", items, "--block-rows=1000")
    assert res.returncode == 1, res.stderr
    fleet_file = _diff_file(res.stdout)
    after = {n: fleet.log(n).count("ace.diff_ranges") for n in fleet.names}
    assert all(after[n] > before[n] for n in fleet.names), "subtasks did not reach both workers"

    local = _run_local(fleet, "table-diff", "testclus", items, "--block-rows=1000")
    assert local.returncode == 1, local.stderr
    local_file = _diff_file(local.stdout)
    fleet_doc, local_doc = json.loads(fleet_file.read_text()), json.loads(local_file.read_text())
    assert fleet_doc["diffs"] == local_doc["diffs"]
    assert fleet_doc["summary"]["executor"] == "fleet"
    for key in ("diff_rows", "diff_rows_by_pair", "total_rows_checked", "ranges_total"):
        assert fleet_doc["summary"][key] == local_doc["summary"][key], key
    assert fleet_doc["summary"]["diff_rows_by_pair"]["n1/n2"] == 7


def _subtask_firsts(fl: Fleet, stderr: str) -> list[int]:
    """The first range of each ``ace.diff_ranges`` task the submitted job ran, from the logs."""
    match = re.search(r"Submitted (td_\S+)", stderr)
    assert match, stderr
    pattern = re.compile(rf"ace\.diff_ranges\[{match.group(1)}\.b(\d+)\] succeeded")
    return sorted({int(m.group(1)) for n in fl.names for m in pattern.finditer(fl.log(n))})


def test_without_batch_size_each_worker_process_gets_four_tasks_tapering(fleet, items):
    client = redis.Redis.from_url(fleet.env["ACE_BROKER_URL"])
    pools = {k.decode().split("@")[0]: json.loads(v)["slots"]
             for k, v in client.hgetall("ace:worker_slots").items()}
    assert pools == {n: fleet.concurrency for n in fleet.names}
    slots = fleet.concurrency * len(fleet.names)

    res = fleet.ace("table-diff", "testclus", items, "--block-rows=1000")
    assert res.returncode == 1, res.stderr
    summary = json.loads(_diff_file(res.stdout).read_text())["summary"]
    total = summary["ranges_total"]
    assert total >= 6 * slots  # enough ranges for three tapering waves (four take 10 each)
    firsts = _subtask_firsts(fleet, res.stderr)
    waves = 4 if total >= 10 * slots else 3
    assert len(firsts) == waves * slots and firsts[0] == 0  # the same count for every process
    sizes = [b - a for a, b in zip(firsts, [*firsts[1:], total], strict=True)]
    # the queue hands out the large ones first; the last wave holds about 1/waves of the first
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes[-slots:]) * 2 <= sum(sizes[:slots])
    assert summary["batch_size"] == sizes[0]

    # an explicit --batch-size is obeyed as given
    res = fleet.ace("table-diff", "testclus", items, "--block-rows=1000", "--batch-size=10")
    assert res.returncode == 1, res.stderr
    assert _subtask_firsts(fleet, res.stderr) == list(range(0, total, 10))


def test_flower_sees_each_subtask_progress_from_its_events(fleet, items):
    """What Flower does: receive the workers' events and keep Celery's event state."""
    app = Celery(broker=fleet.env["ACE_BROKER_URL"])
    state = State()
    seen: list[tuple[str, str, int, int]] = []
    listening = threading.Event()

    def on_event(event: dict) -> None:  # type: ignore[type-arg]
        state.event(event)
        if event["type"] == "task-progress":
            task = state.tasks[event["uuid"]]
            seen.append((event["uuid"], task.state, task.done, task.total))

    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event})
        thread = threading.Thread(
            target=lambda: (listening.set(), receiver.capture(limit=None, wakeup=False)),
            daemon=True)
        thread.start()
        listening.wait(5)
        time.sleep(0.5)  # the receiver's queue is bound once it consumes
        res = fleet.ace("table-diff", "testclus", items, "--block-rows=1000")
        job = re.search(r"Submitted (td_\S+)", res.stderr)
        assert res.returncode == 1 and job, res.stderr

        def mine() -> list[tuple[str, str, int, int]]:
            return [s for s in list(seen) if s[0].startswith(job.group(1) + ".b")]
        # the last events are buffered for a moment: wait for the one of the job's last range
        try:
            wait_for(lambda: any(done == total for *_, done, total in mine()), 10,
                     "the last progress event")
        finally:
            receiver.should_stop = True
            thread.join(10)
    mine = mine()
    assert mine, seen[:5]
    assert all(state_ == "PROGRESS" and 0 < done <= total for _, state_, done, total in mine)
    assert max(done for *_, done, _ in mine) == mine[0][3]  # the job's every range, at the end
    assert len({uuid for uuid, *_ in mine}) > 1  # more than one subtask reported
    # each subtask shows which ranges it holds, and the key ranges cover the plan once
    subtasks = [t for uuid, t in state.tasks.items() if uuid.startswith(job.group(1) + ".b")]
    spans = sorted(tuple(int(n) for n in re.fullmatch(r"\(ranges? (\d+)(?:-(\d+))?\)", t.args)
                         .groups(default="-1")) for t in subtasks)
    assert spans[0][0] == 0 and all(t.name == "ace.diff_ranges" for t in subtasks)
    ends = [last if last >= 0 else first for first, last in spans]
    assert all(spans[i + 1][0] == ends[i] + 1 for i in range(len(spans) - 1))


def test_task_store_follows_a_task_through_its_life(fleet, items):
    res = fleet.ace("table-diff", "testclus", items, "--no-wait")
    assert res.returncode == 0, res.stderr
    task_id = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"td_\d{8}_\d{6}_[a-z0-9]+", task_id)
    store = _store(fleet)
    seen = set()

    def finished() -> bool:
        rec = store.get(task_id)
        assert rec is not None
        seen.add(rec.status)
        return rec.status in (COMPLETED, FAILED)
    wait_for(finished, 60, "the task to finish", interval=0.02)
    rec = store.get(task_id)
    assert rec is not None and rec.status == COMPLETED, rec.error if rec else None
    assert seen & {RUNNING, COMPLETED}
    assert rec.task_type == "table-diff" and rec.cluster_name == "testclus"
    assert rec.started_at is not None and rec.finished_at is not None and rec.time_taken >= 0
    assert rec.progress_total and rec.progress_done == rec.progress_total
    assert rec.result["mismatched_rows"] == rec.result["summary"]["diff_rows"] > 0
    assert Path(rec.result["diff_file"]).is_file()
    assert rec.requested_by


def _wait_done(fleet: Fleet, task_id: str, timeout: float):  # type: ignore[no-untyped-def]
    store = _store(fleet)
    wait_for(lambda: store.get(task_id).status in (COMPLETED, FAILED), timeout,
             f"task {task_id} to finish", interval=0.2)
    return store.get(task_id)


def test_a_stopped_node_fails_the_task_naming_it(fleet, items, pg_cluster):
    pg_cluster.stop_node(2)
    try:
        res = fleet.ace("table-diff", "testclus", items)
    finally:
        pg_cluster.start_node(2)
    assert res.returncode == 2
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith("ace: error: Node n3 cannot be reached")
    assert "Traceback" not in res.stderr
    # once the node is back, the workers reconnect by themselves
    again = fleet.ace("table-diff", "testclus", items)
    assert again.returncode == 1, again.stderr


def test_max_allowed_diffs_stops_the_fleet_early(fleet, items, tmp_path, pg_cluster):
    run_sql(pg_cluster.node_dsn(1), f"UPDATE {TABLE} SET label = label || '!' WHERE id % 100 = 1")
    try:
        # a second, separate fleet (own Redis databases) whose workers allow only 20 diffs
        broker = fleet.env["ACE_BROKER_URL"].rsplit("/", 1)[0]
        fl = Fleet(tmp_path, {**fleet.env, "ACE_MAX_ALLOWED_DIFFS": "20",
                              "ACE_BROKER_URL": f"{broker}/2", "ACE_RESULT_BACKEND": f"{broker}/3"},
                   names=("cap1",))
        fl.start()
        try:
            res = fl.ace("table-diff", "testclus", items, "--block-rows=1000")
        finally:
            fl.stop()
        assert res.returncode == 1, res.stderr
        assert "PARTIAL" in res.stdout
        summary = json.loads(_diff_file(res.stdout).read_text())["summary"]
        assert summary["diff_partial"] is True and "MAX_ALLOWED_DIFFS" in summary["partial_reason"]
        assert 20 <= summary["diff_rows"] < 300
        assert summary["ranges_checked"] < summary["ranges_total"]
    finally:
        run_sql(pg_cluster.node_dsn(1), f"UPDATE {TABLE} SET label = rtrim(label, '!') WHERE id % 100 = 1")


def test_redis_restart_between_tasks_needs_no_worker_restart(items, tmp_path, pg_cluster):
    # a Redis and workers of its own: restarting the session's Redis would disturb the
    # workers every later test shares
    with own_fleet(tmp_path, ("w1",), pg_cluster=pg_cluster) as fl:
        assert fl.redis is not None
        fl.redis.restart()
        res = fl.ace("table-diff", "testclus", items, timeout=180)
    assert res.returncode == 1, res.stderr


def test_beat_runs_a_scheduled_diff_as_an_ordinary_task(fleet, items, tmp_path):
    config = tmp_path / "ace_config.py"
    config.write_text(
        "schedule_jobs = [{'name': 'fl_job', 'cluster_name': 'testclus',\n"
        f"                  'table_name': '{items}', 'args': {{'block_rows': 5000}}}}]\n"
        "schedule_config = [{'job_name': 'fl_job', 'run_frequency': '2s', 'enabled': True},\n"
        "                   {'job_name': 'fl_job', 'crontab_schedule': '0 0 * * *'}]\n"
        "MIN_RUN_FREQUENCY = '1s'\n")
    env = {**fleet.env, "ACE_CONFIG": str(config)}
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "ace_workers", "beat", "-s",
         str(tmp_path / "beat-schedule"), "-l", "INFO"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = _store(fleet)
    try:
        def scheduled_done() -> bool:
            return any(r.requested_by == "scheduler:fl_job" and r.status == COMPLETED
                       for r in store.recent(20))
        wait_for(scheduled_done, 60, "a scheduled diff to complete", interval=0.5)
    finally:
        beat.terminate()
        beat.wait(20)
    rec = next(r for r in store.recent(20) if r.requested_by == "scheduler:fl_job")
    assert rec.task_type == "table-diff" and rec.result["mismatched_rows"] > 0
    assert rec.options["block_rows"] == 5000


def test_bad_schedule_stops_beat_with_one_sentence(fleet, tmp_path):
    config = tmp_path / "ace_config.py"
    config.write_text("schedule_jobs = [{'name': 'j', 'cluster_name': 'c', 'table_name': 'a.b'}]\n"
                      "schedule_config = [{'job_name': 'j', 'run_frequency': '30s', "
                      "'enabled': True}]\n")
    res = subprocess.run([sys.executable, "-m", "celery", "-A", "ace_workers", "beat", "-s",
                          str(tmp_path / "bs")], cwd=tmp_path, capture_output=True, text=True,
                         env={**fleet.env, "ACE_CONFIG": str(config)}, timeout=60)
    assert res.returncode != 0
    assert "below MIN_RUN_FREQUENCY (5m)" in res.stderr + res.stdout


def test_repair_and_rerun_run_on_the_fleet_from_the_cli(fleet, pg_cluster):
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS fl_rep",
        "CREATE TABLE fl_rep (id int PRIMARY KEY, v text, n numeric)",
        "INSERT INTO fl_rep SELECT g, 'v' || g, g / 8.0 FROM generate_series(1, 3000) g",
    ])
    run_sql(pg_cluster.node_dsn(1), "DELETE FROM fl_rep WHERE id IN (10, 2000)")
    run_sql(pg_cluster.node_dsn(2), "UPDATE fl_rep SET v = NULL WHERE id = 77")
    run_sql(pg_cluster.node_dsn(2), "INSERT INTO fl_rep VALUES (5000, 'extra', 1.10)")
    diff = fleet.ace("table-diff", "testclus", "public.fl_rep")
    assert diff.returncode == 1, diff.stderr
    diff_file = str(_diff_file(diff.stdout))

    repair = fleet.ace("table-repair", "testclus", "public.fl_rep", f"--diff-file={diff_file}",
                       "--source-of-truth=n1")
    assert repair.returncode == 0, repair.stderr
    assert "Submitted tr_" in repair.stderr
    for behavior in ("multiprocessing", "hostdb"):
        rerun = fleet.ace("table-rerun", "testclus", "public.fl_rep", f"--diff-file={diff_file}",
                          f"--behavior={behavior}")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "4 resolved, 0 still differ" in rerun.stdout
    again = fleet.ace("table-diff", "testclus", "public.fl_rep")
    assert again.returncode == 0, again.stdout


def _send(fleet: Fleet, name: str, task_id: str, options: dict, submission: dict) -> None:  # type: ignore[type-arg]
    """Send a task's message as ``submit`` does, but without recording it first."""
    sent = subprocess.run(
        [sys.executable, "-c", "import json, sys; from ace_workers.app import app; "
         "app.send_task(sys.argv[1], args=[json.loads(sys.argv[3])], task_id=sys.argv[2], "
         "kwargs={'submission': json.loads(sys.argv[4])})",
         name, task_id, json.dumps(options), json.dumps(submission)],
        env=fleet.env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


def test_a_message_that_overtakes_its_submitter_is_recorded_from_the_message(fleet, items):
    """A worker may take a task before the submitter has written its row: it writes the same."""
    task_id = "td_20300101_000000_early1"
    submission = {"task_type": "table-diff", "cluster_name": "testclus", "table_name": items,
                  "requested_by": "alice", "submitted_at": "2030-01-01T00:00:00+00:00"}
    options = {"cluster_name": "testclus", "table_name": items}
    _send(fleet, "ace.table_diff", task_id, options, submission)
    rec = _wait_done(fleet, task_id, 60)
    assert rec.status == COMPLETED, rec.error
    assert (rec.task_type, rec.cluster_name, rec.table_name, rec.requested_by) == (
        "table-diff", "testclus", items, "alice")
    assert rec.submitted_at.replace(tzinfo=timezone.utc) == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert rec.options["table_name"] == items
    # the submitter's own write, arriving last, changes nothing
    assert record_submission(_store(fleet), task_id, options, submission) is False
    assert _store(fleet).get(task_id) == rec


def test_an_unreachable_broker_records_nothing_and_says_so(fleet, items, redis_server):
    before = {r.task_id for r in _store(fleet).recent(1000)}
    res = fleet.ace("table-diff", "testclus", items, timeout=60,
                    extra_env={"ACE_BROKER_URL": f"redis://:secret@127.0.0.1:{free_port()}/0"})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "ace: error: Could not reach the task broker at redis://***@127.0.0.1:"), res.stderr
    assert "secret" not in res.stderr and "Check that Redis is running." in lines[0]
    assert {r.task_id for r in _store(fleet).recent(1000)} == before


def test_a_finished_job_delivered_again_changes_nothing(fleet, items):
    res = fleet.ace("table-diff", "testclus", items, "--no-wait")
    task_id = res.stdout.strip().splitlines()[-1]
    first = _wait_done(fleet, task_id, 60)
    assert first.status == COMPLETED
    diff_dir = Path(first.result["diff_file"]).parent
    files_before = sorted(diff_dir.iterdir())
    # the very same message again, as a broker redelivers it when an ack was lost
    late = {"task_type": "table-diff", "cluster_name": "testclus", "table_name": items,
            "requested_by": "someone else", "submitted_at": "2030-01-01T00:00:00+00:00"}
    _send(fleet, "ace.table_diff", task_id, first.options, late)
    received = f"ace.table_diff[{task_id}] received"
    ended = re.compile(rf"ace\.table_diff\[{re.escape(task_id)}\] "
                       r"(?:succeeded|ignored|failed|retry|rejected)")
    wait_for(lambda: sum(fleet.log(n).count(received) for n in fleet.names) >= 2, 30,
             "the redelivered task to be taken")
    wait_for(lambda: sum(len(ended.findall(fleet.log(n))) for n in fleet.names) >= 2, 30,
             "the redelivered task to be done with")
    again = _store(fleet).get(task_id)
    assert again is not None and again.status == COMPLETED
    assert again.finished_at == first.finished_at and again.result == first.result
    assert again.requested_by == first.requested_by and again.submitted_at == first.submitted_at
    assert sorted(diff_dir.iterdir()) == files_before
