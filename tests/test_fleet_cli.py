"""The CLI on a fleet as a user meets it: it never hangs, and says what in-process says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet_helpers import Fleet, wait_for
from node_sql import run_sql

from ace_shared.tasks.store import PENDING, TaskStore


@pytest.fixture(scope="module")
def small(pg_cluster):  # type: ignore[no-untyped-def]
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS fc_small",
              "CREATE TABLE fc_small (id int PRIMARY KEY, v text)",
              "INSERT INTO fc_small SELECT g, 'v' || g FROM generate_series(1, 500) g")
    run_sql(pg_cluster.node_dsn(1), "UPDATE fc_small SET v = 'other' WHERE id = 7")
    return "public.fc_small"


def _without_workers(fleet: Fleet) -> dict[str, str]:
    """The fleet's environment on Redis databases no worker consumes."""
    base = fleet.env["ACE_BROKER_URL"].rsplit("/", 1)[0]
    return {"ACE_BROKER_URL": f"{base}/9", "ACE_RESULT_BACKEND": f"{base}/10"}


def test_the_cli_says_once_that_no_worker_takes_the_queue(fleet, small, tmp_path):
    env = {**fleet.env, **_without_workers(fleet), "ACE_NO_PROGRESS": "1"}
    errors = tmp_path / "stderr"
    with open(errors, "w") as err:
        cli = subprocess.Popen([sys.executable, "-m", "ace_api", "table-diff", "testclus", small],
                               env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: "No worker" in errors.read_text(), 20, "the CLI to say so")
        cpu = _cpu_seconds(cli.pid)
        time.sleep(6)  # it says so once, and keeps waiting without cost
        assert cli.poll() is None
        text = errors.read_text()
        assert text.count("No worker") == 1 and "stays queued" in text, text
        assert _cpu_seconds(cli.pid) - cpu < 0.3  # blocked, not polling
    finally:
        cli.kill()
        cli.wait(10)
    task_id = re.search(r"Submitted (\S+)", errors.read_text()).group(1)  # type: ignore[union-attr]
    rec = TaskStore(fleet.env["ACE_DATABASE_URL"]).get(task_id)
    assert rec is not None and rec.status == PENDING
    # --no-wait returns at once with the id
    res = fleet.ace("table-diff", "testclus", small, "--no-wait", extra_env=_without_workers(fleet))
    assert res.returncode == 0 and res.stdout.strip().startswith("td_"), res.stderr
    # and with --json, as one JSON document a script can read
    res = fleet.ace("table-diff", "testclus", small, "--no-wait", "--json",
                    extra_env=_without_workers(fleet))
    assert res.returncode == 0, res.stderr
    queued = json.loads(res.stdout)
    assert queued["task_id"].startswith("td_") and queued["status"] == "PENDING"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def test_the_cli_learns_the_outcome_whatever_its_own_task_store(fleet, small, tmp_path):
    """The workers keep their store; a CLI set to another learns the outcome from Redis."""
    res = fleet.ace("table-diff", "testclus", small, timeout=60,
                    extra_env={"ACE_DATABASE_URL": f"sqlite:///{tmp_path / 'elsewhere.db'}"})
    assert res.returncode == 1, res.stderr
    assert "Diffs written to" in res.stdout
    # a store this host cannot open at all: the task is queued and followed all the same
    res = fleet.ace("table-diff", "testclus", small, timeout=60,
                    extra_env={"ACE_DATABASE_URL": "sqlite:////proc/no/such/dir/tasks.db"})
    assert res.returncode == 1, res.stderr
    assert "Diffs written to" in res.stdout
    assert "could not record it" in res.stderr


def _make_repair_table(pg_cluster) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS fc_rep",
              "CREATE TABLE fc_rep (id int PRIMARY KEY, v text, n int)",
              "INSERT INTO fc_rep SELECT g, 'v' || g, g FROM generate_series(1, 400) g")
    run_sql(pg_cluster.node_dsn(1), "DELETE FROM fc_rep WHERE id IN (10, 20)",
          "UPDATE fc_rep SET v = 'changed' WHERE id = 30",
          "UPDATE fc_rep SET n = NULL WHERE id = 40",
          "INSERT INTO fc_rep VALUES (900, 'extra', 1)")
    run_sql(pg_cluster.node_dsn(0), "UPDATE fc_rep SET v = NULL WHERE id = 50")


def _local(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in fleet.env.items() if k not in ("ACE_BROKER_URL", "ACE_RESULT_BACKEND")}
    return subprocess.run([sys.executable, "-m", "ace_api", *args],
                          env={**env, "ACE_NO_PROGRESS": "1"}, capture_output=True, text=True,
                          timeout=120)


def _repair(fleet: Fleet, pg_cluster, on_fleet: bool, options: tuple[str, ...]):  # type: ignore[no-untyped-def]
    _make_repair_table(pg_cluster)
    diff = _local(fleet, "table-diff", "testclus", "public.fc_rep", "--nodes=n1,n2")
    assert diff.returncode == 1, diff.stderr
    diff_file = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
    args = ("table-repair", "testclus", "public.fc_rep", f"--diff-file={diff_file}",
            "--source-of-truth=n1", *options)
    res = fleet.ace(*args) if on_fleet else _local(fleet, *args)
    text = re.sub(r"written to \S+", "written to FILE", res.stdout)
    text = re.sub(r"\d+\.\d+ s\b", "T s", text)
    after = _local(fleet, "table-diff", "testclus", "public.fc_rep", "--nodes=n1,n2")
    return res.returncode, text, after.returncode, res.stderr


@pytest.mark.parametrize("options", [
    (), ("--upsert-only",), ("--insert-only",), ("--insert-only", "--bidirectional"),
    ("--fix-nulls",), ("--dry-run",), ("--dry-run", "--generate-report"),
    ("--generate-report", "--upsert-only"),
], ids=lambda o: " ".join(o) or "plain")
def test_every_repair_option_gives_the_same_outcome_on_the_fleet(fleet, pg_cluster, options):
    on_fleet = _repair(fleet, pg_cluster, True, options)
    in_process = _repair(fleet, pg_cluster, False, options)
    assert on_fleet[0] == 0, on_fleet[3]
    assert on_fleet[:3] == in_process[:3]
