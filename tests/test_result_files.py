"""A finished task's files, fetched by task id: the REST download and ``ace diff-file``.

The API runs in-process through Flask's test client (as in test_api.py); the
files are ones a task recorded in the task store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from client_helpers import api_client, call
from flask.testing import FlaskClient

from ace_shared.config import Settings
from ace_shared.tasks.store import TaskStore

DIFF_ID = "td_20240315_123456_abcdef"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "clusters").mkdir()
    (tmp_path / "out").mkdir()
    return Settings(CLUSTER_DIR=str(tmp_path / "clusters"), OUTPUT_DIR=str(tmp_path / "out"),
                    DATABASE_URL=f"sqlite:///{tmp_path / 'tasks.db'}",
                    API_RATE_LIMIT_STORAGE="memory://", API_ADMIN_CNS="boss")


@pytest.fixture()
def client(settings: Settings) -> FlaskClient:
    return api_client(settings)


def finished_diff(settings: Settings, task_id: str = DIFF_ID, owner: str = "alice",
                  rows: int = 3) -> tuple[Path, Path]:
    """A completed table-diff of ``owner`` with its diff file and CSV report."""
    folder = settings.output_dir / "diffs" / "2024-03-15"
    folder.mkdir(parents=True, exist_ok=True)
    diff = folder / f"diffs_{task_id[-6:]}.json"
    diff.write_text(json.dumps({"diffs": {"n1/n2": {"n1": [{"id": str(i)} for i in range(rows)],
                                                     "n2": []}}}))
    report = diff.with_suffix(".csv")
    report.write_text("pair,node,id\n" + "".join(f"n1/n2,n1,{i}\n" for i in range(rows)))
    store = TaskStore.from_settings(settings)
    store.create(task_id, "table-diff", cluster_name="lab", table_name="public.t",
                 requested_by=owner)
    store.complete(task_id, {"diff_file": str(diff), "summary": {
        "diff_file": str(diff), "report_file": str(report), "mismatch": True}})
    return diff, report


def test_a_caller_downloads_its_own_diff_file_and_report(client: FlaskClient,
                                                         settings: Settings) -> None:
    diff, report = finished_diff(settings)
    got = call(client, "GET", f"/ace/diff-files/{DIFF_ID}", cn="alice")
    assert got.status_code == 200
    assert got.data == diff.read_bytes()
    assert got.mimetype == "application/json"
    assert got.headers["Content-Disposition"] == \
        f'attachment; filename="public.t_{DIFF_ID}.json"'
    csv = call(client, "GET", f"/ace/diff-files/{DIFF_ID}?format=csv", cn="alice")
    assert csv.status_code == 200 and csv.data == report.read_bytes()
    assert csv.mimetype == "text/csv"
    assert csv.headers["Content-Disposition"].endswith('.csv"')


def test_another_callers_file_is_404_and_an_admin_sees_all(client: FlaskClient,
                                                           settings: Settings) -> None:
    diff, _ = finished_diff(settings)
    other = call(client, "GET", f"/ace/diff-files/{DIFF_ID}", cn="bob")
    unknown = call(client, "GET", "/ace/diff-files/td_20240315_123456_ffffff", cn="bob")
    assert other.status_code == unknown.status_code == 404
    assert other.json["error"] == unknown.json["error"].replace("ffffff", "abcdef")
    admin = call(client, "GET", f"/ace/diff-files/{DIFF_ID}", cn="boss")
    assert admin.status_code == 200 and admin.data == diff.read_bytes()


def test_formats_a_task_did_not_write_and_unfinished_tasks_are_refused(
        client: FlaskClient, settings: Settings) -> None:
    finished_diff(settings)
    html = call(client, "GET", f"/ace/diff-files/{DIFF_ID}?format=html", cn="alice")
    assert html.status_code == 404 and "no html file (it offers csv, json)" in html.json["error"]
    bad = call(client, "GET", f"/ace/diff-files/{DIFF_ID}?format=xml", cn="alice")
    assert bad.status_code == 400 and "json, csv, html" in bad.json["error"]
    store = TaskStore.from_settings(settings)
    store.create("td_20240315_123456_runnin", "table-diff", cluster_name="lab",
                 table_name="public.t", requested_by="alice")
    running = call(client, "GET", "/ace/diff-files/td_20240315_123456_runnin", cn="alice")
    assert running.status_code == 409 and "PENDING" in running.json["error"]
    store.fail("td_20240315_123456_runnin", "Node n2 cannot be reached.")
    failed = call(client, "GET", "/ace/diff-files/td_20240315_123456_runnin", cn="alice")
    assert failed.status_code == 404 and "Node n2 cannot be reached" in failed.json["error"]


def test_a_repairs_report_is_its_file_never_the_diff_file_it_was_given(
        client: FlaskClient, settings: Settings, tmp_path: Path) -> None:
    given = tmp_path / "someone_elses.json"
    given.write_text("{}")
    report = settings.output_dir / "repair_report.json"
    report.write_text('{"operation": "table-repair"}')
    store = TaskStore.from_settings(settings)
    store.create("tr_20240315_123456_abcdef", "table-repair", cluster_name="lab",
                 table_name="public.t", requested_by="alice")
    store.complete("tr_20240315_123456_abcdef", {"diff_file": str(given),
                                                 "report_file": str(report)})
    got = call(client, "GET", "/ace/diff-files/tr_20240315_123456_abcdef", cn="alice")
    assert got.status_code == 200 and got.data == report.read_bytes()


def test_a_file_outside_this_hosts_output_dir_is_not_served(
        client: FlaskClient, settings: Settings, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    store = TaskStore.from_settings(settings)
    store.create(DIFF_ID, "table-diff", cluster_name="lab", table_name="public.t",
                 requested_by="alice")
    store.complete(DIFF_ID, {"diff_file": str(secret)})
    got = call(client, "GET", f"/ace/diff-files/{DIFF_ID}", cn="alice")
    assert got.status_code == 404 and "not in this host's output directory" in got.json["error"]
    assert str(settings.output_dir) not in got.json["error"]  # no server path


def test_the_download_is_in_the_openapi_document(client: FlaskClient) -> None:
    doc = call(client, "GET", "/ace/swagger.json", cn="alice").json
    path = doc["paths"]["/diff-files/{task_id}"]
    operation = path["get"]
    names = {p["name"] for p in [*path.get("parameters", []), *operation["parameters"]]}
    assert names >= {"task_id", "format"}
    assert {"200", "404", "409"} <= set(operation["responses"])


@pytest.mark.parametrize(("task_type", "status", "result", "code"), [
    ("table-diff", "COMPLETED", {"summary": {"mismatch": True}}, 1),
    ("table-diff", "COMPLETED", {"summary": {"mismatch": False}}, 0),
    ("table-rerun", "COMPLETED", {"summary": {"remaining": 2, "mismatch": True}}, 1),
    ("table-rerun", "COMPLETED", {"summary": {"remaining": 0}}, 0),
    ("table-repair", "COMPLETED", {"report_file": None}, 0),
    ("schema-diff", "COMPLETED", {"summary": {"exit_code": 1}}, 1),
    ("mtree", "COMPLETED", {"summary": {"mismatch": True}}, 1),
    ("table-diff", "FAILED", None, 2),
    ("table-diff", "RUNNING", None, 0),
])
def test_task_status_exits_as_the_command_that_made_the_task(
        task_type: str, status: str, result: dict | None, code: int) -> None:
    from ace_api.cli.tasks import exit_code_of
    assert exit_code_of(task_type, status, result) == code
