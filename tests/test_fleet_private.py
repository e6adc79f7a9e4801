"""Two workers, the CLI and the API on private output folders, sharing only Redis and a
PostgreSQL task store: every result reaches whoever asked for it."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from client_helpers import api_client, call
from fleet_helpers import send_as_beat, wait_for
from private_fleet import PrivateFleet, S3Server, fleet_files, private_fleet

from ace_shared.config import Settings

TABLE = "public.pf_rows"


def _exec(pg_cluster: Any, node: int, *statements: str) -> None:
    with psycopg2.connect(pg_cluster.node_dsn(node)) as conn, conn.cursor() as cur:
        for stmt in statements:
            cur.execute(stmt)
    conn.close()


@pytest.fixture(scope="module", params=["database", "s3"])
def fleet(request: pytest.FixtureRequest, pg_cluster: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fleet on the task store's database (the default), or on an S3-compatible bucket."""
    workdir = tmp_path_factory.mktemp(f"private-{request.param}")
    if request.param == "database":
        with private_fleet(workdir, pg_cluster, "ace_private") as fl:
            yield fl
        return
    s3 = S3Server(workdir)
    s3.start()
    try:
        with private_fleet(workdir, pg_cluster, "ace_private_s3", shared_store=s3.url,
                           extra_env=s3.env) as fl:
            yield fl
    finally:
        s3.stop()


@pytest.fixture()
def table(pg_cluster: Any) -> str:
    for i in range(3):
        _exec(pg_cluster, i, f"DROP TABLE IF EXISTS {TABLE}",
              f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v text)",
              f"INSERT INTO {TABLE} SELECT g, 'v' || g FROM generate_series(1, 3000) g")
    _exec(pg_cluster, 1, f"UPDATE {TABLE} SET v = 'other' WHERE id IN (7, 2999)",
          f"DELETE FROM {TABLE} WHERE id = 1500")
    return TABLE


def _ids(diff_file: Path) -> set[str]:
    diffs = json.loads(diff_file.read_text())["diffs"]
    return {r["id"] for pair in diffs.values() for side in pair.values() for r in side}


def _task_id(stderr: str) -> str:
    found = re.search(r"Submitted (\S+)", stderr)
    assert found, stderr
    return found.group(1)


def test_a_diff_lands_on_the_cli_host_and_a_repair_by_task_id_fixes_it(
        fleet: PrivateFleet, table: str) -> None:
    # ranges of 1000 rows, a task each: the batches spread over both workers, the merge
    # reads the partial files another host wrote
    diff = fleet.ace("table-diff", "testclus", table, "--output", "html", "--block-rows",
                     "1000", "--batch-size", "1")
    assert diff.returncode == 1, diff.stderr
    task_id = _task_id(diff.stderr)
    path = Path(re.search(r"Diffs written to (\S+)", diff.stdout).group(1))  # type: ignore[union-attr]
    assert path.is_relative_to(fleet.folder("cli")) and path.is_file()
    assert _ids(path) == {"7", "1500", "2999"}
    report = Path(re.search(r"Report written to (\S+)", diff.stdout).group(1))  # type: ignore[union-attr]
    assert report.is_relative_to(fleet.folder("cli")) and "2999" in report.read_text()
    for name in fleet.names:  # no worker's folder holds another's files or the CLI's
        assert not any(p.name == path.name for p in fleet.folder(name).rglob("*.json")
                       if p.is_relative_to(fleet.folder("cli")))

    status = fleet.ace("task-status", task_id)
    assert status.returncode == 1 and "COMPLETED" in status.stdout, status.stderr

    repair = fleet.ace("table-repair", "testclus", table, "--diff-file", task_id,
                       "--source-of-truth", "n1")
    assert repair.returncode == 0, repair.stderr
    again = fleet.ace("table-diff", "testclus", table)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_rerun_of_a_local_file_is_uploaded_for_the_fleet(fleet: PrivateFleet,
                                                           table: str, pg_cluster: Any) -> None:
    diff = fleet.ace("table-diff", "testclus", table)
    assert diff.returncode == 1, diff.stderr
    path = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
    _exec(pg_cluster, 1, f"UPDATE {TABLE} SET v = 'v7' WHERE id = 7")
    rerun = fleet.ace("table-rerun", "testclus", table, "--diff-file", path)
    assert rerun.returncode == 1, rerun.stderr
    assert "2 still differ" in rerun.stdout, rerun.stdout
    new = Path(re.search(r"Diffs written to (\S+)", rerun.stdout).group(1))  # type: ignore[union-attr]
    assert new.is_relative_to(fleet.folder("cli")) and _ids(new) == {"1500", "2999"}


def test_a_rest_caller_downloads_its_own_diff_file_and_not_anothers(
        fleet: PrivateFleet, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL"):
        if key in fleet.env:
            monkeypatch.setenv(key, fleet.env[key])
    diff = fleet.ace("table-diff", "testclus", table, "--output", "csv")
    task_id = _task_id(diff.stderr)
    local = Path(re.search(r"Diffs written to (\S+)", diff.stdout).group(1))  # type: ignore[union-attr]
    settings = Settings(CLUSTER_DIR=fleet.env["ACE_CLUSTER_DIR"],
                        OUTPUT_DIR=str(fleet.folder("api")),
                        DATABASE_URL=fleet.env["ACE_DATABASE_URL"],
                        SHARED_STORE=fleet.env["ACE_SHARED_STORE"],
                        API_RATE_LIMIT_STORAGE="memory://")
    client = api_client(settings)
    mine = call(client, "GET", f"/ace/diff-files/{task_id}", cn=getpass.getuser())
    assert mine.status_code == 200, mine.data
    assert mine.data == local.read_bytes()
    assert mine.headers["Content-Disposition"] == \
        f'attachment; filename="{table}_{task_id}.json"'
    csv = call(client, "GET", f"/ace/diff-files/{task_id}?format=csv", cn=getpass.getuser())
    assert csv.status_code == 200 and b"2999" in csv.data
    other = call(client, "GET", f"/ace/diff-files/{task_id}", cn="somebody_else")
    assert other.status_code == 404
    assert not any(fleet.folder("api").rglob("*.json"))  # streamed from the store, not copied


PLAN = f"""
version: 1
default: {{action: keep, node: n1}}
tables:
  {TABLE}: {{rules: []}}
"""


def test_a_resolved_plan_is_uploaded_for_the_fleet_and_removed_once_applied(
        fleet: PrivateFleet, table: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL"):  # to look in the fleet's bucket from here
        if key in fleet.env:
            monkeypatch.setenv(key, fleet.env[key])
    diff = fleet.ace("table-diff", "testclus", table)
    assert diff.returncode == 1, diff.stderr
    diff_file = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
    plan, resolved = tmp_path / "plan.yaml", tmp_path / "resolved.jsonl"
    plan.write_text(PLAN)
    here = {k: v for k, v in fleet.env.items() if k not in ("ACE_BROKER_URL",
                                                             "ACE_RESULT_BACKEND")}
    dry = subprocess.run([sys.executable, "-m", "ace_api", "table-repair", "testclus", table,
                          "--diff-file", diff_file, "--repair-plan", str(plan), "--plan-out",
                          str(resolved), "--dry-run"], capture_output=True, text=True,
                         env={**here, **fleet.front_env(), "ACE_NO_PROGRESS": "1"}, timeout=120)
    assert dry.returncode == 0 and resolved.is_file(), dry.stderr
    # the workers are on other hosts: the plan file the CLI names is not there when they run
    for name in fleet.names:
        fleet.stop_worker(name)
    try:
        sent = fleet.ace("table-repair", "testclus", table, "--apply-plan", str(resolved),
                         "--no-wait")
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()
        resolved.unlink()
    finally:
        for name in fleet.names:
            fleet.start_worker(name)
    status: list[str] = []

    def finished() -> bool:
        status[:] = [fleet.ace("task-status", task_id).stdout]
        return "COMPLETED" in status[0] or "FAILED" in status[0]
    wait_for(finished, 60, "the repair to finish")
    assert "COMPLETED" in status[0], status[0]
    again = fleet.ace("table-diff", "testclus", table)
    assert again.returncode == 0, again.stdout + again.stderr
    for name in fleet.names:  # read once, the worker's copy is gone, and so is the upload
        assert not list(fleet.folder(name).rglob("upload-*.plan.jsonl"))
    with fleet_files(fleet.env):
        from ace_shared.tasks.filestore import active_store
        store = active_store()
        assert store is not None and store.size(f"uploads/{task_id}.plan.jsonl") is None


def test_a_plan_resolved_on_the_fleet_lands_where_the_cli_was_told(
        fleet: PrivateFleet, table: str, tmp_path: Path) -> None:
    """--plan-out names a file on the CLI's host; the worker that resolves the plan is on
    another, so the plan comes back through the shared store, and then applies."""
    diff = fleet.ace("table-diff", "testclus", table)
    assert diff.returncode == 1, diff.stderr
    diff_file = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
    plan, resolved = tmp_path / "plan.yaml", tmp_path / "review" / "resolved.jsonl"
    plan.write_text(PLAN)
    resolved.parent.mkdir()
    dry = fleet.ace("table-repair", "testclus", table, "--diff-file", diff_file,
                    "--repair-plan", str(plan), "--plan-out", str(resolved), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert resolved.is_file() and f"Resolved plan written to {resolved}" in dry.stdout, dry.stdout
    assert '"writes"' in resolved.read_text().splitlines()[0]  # the header, then each key
    for name in fleet.names:  # the worker kept no copy of its own
        assert not list(fleet.folder(name).rglob("*.plan.jsonl"))
    applied = fleet.ace("table-repair", "testclus", table, "--apply-plan", str(resolved))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = fleet.ace("table-diff", "testclus", table)
    assert again.returncode == 0, again.stdout + again.stderr


def test_plan_out_into_a_missing_folder_is_refused_before_anything_is_queued(
        fleet: PrivateFleet, table: str, tmp_path: Path) -> None:
    diff = fleet.ace("table-diff", "testclus", table)
    diff_file = re.search(r"Diffs written to (\S+)", diff.stdout).group(1)  # type: ignore[union-attr]
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    sent = fleet.ace("table-repair", "testclus", table, "--diff-file", diff_file,
                     "--repair-plan", str(plan), "--plan-out", str(tmp_path / "no" / "p.jsonl"),
                     "--dry-run")
    assert sent.returncode == 2
    assert "does not exist; create it or give another path" in sent.stderr, sent.stderr
    assert "Submitted" not in sent.stderr


def test_a_scheduled_diff_runs_on_private_folders_and_its_file_is_fetched_elsewhere(
        fleet: PrivateFleet, table: str, tmp_path: Path) -> None:
    """What beat sends for a table-diff job runs in batches any worker may take, and its
    diff file reaches the CLI's host (which ran none of it) by its task id."""
    from ace_shared.tasks.store import COMPLETED, FAILED, TaskStore
    send_as_beat(fleet.env, "ace.scheduled_diff", [
        "pf_job", {"cluster_name": "testclus", "table_name": table, "block_rows": 1000,
                   "batch_size": 1}, "table-diff"])
    store = TaskStore(fleet.env["ACE_DATABASE_URL"])

    def run() -> Any:
        return next((r for r in store.recent(50) if r.requested_by == "scheduler:pf_job"
                     and r.status in (COMPLETED, FAILED)), None)
    wait_for(lambda: run() is not None, 90, "the scheduled diff to finish")
    record = run()
    assert record.status == COMPLETED, record.error
    got = tmp_path / "got.json"
    fetched = fleet.ace("diff-file", record.task_id, "--output-file", str(got))
    assert fetched.returncode == 0, fetched.stderr
    assert _ids(got) == {"7", "1500", "2999"}
    assert not any(fleet.folder("cli").rglob(Path(record.result["diff_file"]).name))
