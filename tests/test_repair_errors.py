"""Bad table-repair and table-rerun requests: one plain sentence, exit 2, nothing written.

"Nothing written" is checked on both sides: no node's rows change and no file
appears under the output directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from repair_helpers import CLUSTER, Nodes, ace, assert_error, diff_table, output_files

from ace_shared.config import load_settings
from ace_shared.errors import BadOptionError, DiffFileError
from ace_shared.repair.request import check_repair_options, validate_repair_request
from ace_shared.rerun.request import validate_rerun_request

TABLE = "public.rp_err"


@pytest.fixture(scope="module")
def diff_path(pg_cluster: Any) -> Path:
    """A real diff of ``rp_err``, where n2 lacks a row and has one changed."""
    nodes = Nodes(pg_cluster)
    nodes.on_all(["DROP TABLE IF EXISTS rp_err",
                  "CREATE TABLE rp_err (id int PRIMARY KEY, v text)",
                  "INSERT INTO rp_err SELECT i, 'v' || i FROM generate_series(1, 20) i"])
    nodes.execute("n2", ["DELETE FROM rp_err WHERE id = 1",
                         "UPDATE rp_err SET v = 'changed' WHERE id = 2"])
    path, _ = diff_table(TABLE)
    return path


@pytest.fixture
def unchanged(pg_cluster: Any, diff_path: Path) -> Iterator[None]:
    """Asserts, after the test, that no node's rows and no output file changed."""
    nodes = Nodes(pg_cluster)
    rows, files = nodes.snapshots(TABLE), output_files()
    yield
    assert nodes.snapshots(TABLE) == rows
    assert output_files() == files


def _repair(*args: str) -> Any:
    return ace("table-repair", CLUSTER, TABLE, *args)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("options", "words"), [
    (["--upsert-only", "--insert-only"], ["--upsert-only", "--insert-only", "choose one"]),
    (["--bidirectional"], ["--bidirectional", "--insert-only"]),
    (["--fix-nulls", "--insert-only"], ["--fix-nulls", "--insert-only"]),
    (["--fix-nulls", "--upsert-only"], ["--fix-nulls", "--upsert-only"]),
    ([], ["--source-of-truth is required"]),
    (["--source-of-truth=n9"], ["n9", "not in cluster"]),
    (["--source-of-truth=n1", "--dry-run=maybe"], ["--dry-run", "maybe"]),
])
def test_contradictory_or_missing_options(diff_path: Path, options: list[str],
                                          words: list[str]) -> None:
    assert_error(_repair(f"--diff-file={diff_path}", *options), *words)


@pytest.mark.usefixtures("unchanged")
def test_diff_file_missing_unreadable_or_not_json(tmp_path: Path) -> None:
    assert_error(_repair("--source-of-truth=n1"), "--diff-file is required")
    assert_error(_repair(f"--diff-file={tmp_path / 'nope.json'}", "--source-of-truth=n1"),
                 "does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"n1/n2\": ")
    assert_error(_repair(f"--diff-file={bad}", "--source-of-truth=n1"), "not valid JSON")
    bad.write_text("[1, 2]")
    assert_error(_repair(f"--diff-file={bad}", "--source-of-truth=n1"), "not a JSON object")
    bad.write_text("{\"hello\": 1}")
    assert_error(_repair(f"--diff-file={bad}", "--source-of-truth=n1"), "hello", "node pair")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert_error(_repair(f"--diff-file={folder}", "--source-of-truth=n1"), "does not exist")


@pytest.mark.usefixtures("unchanged")
def test_diff_file_for_another_table_or_cluster(diff_path: Path, tmp_path: Path) -> None:
    run = ace("table-repair", CLUSTER, "public.rp_other", f"--diff-file={diff_path}",
              "--source-of-truth=n1")
    assert_error(run, "rp_err", "rp_other")
    data = json.loads(diff_path.read_text())
    data["summary"]["cluster_name"] = "elsewhere"
    other = tmp_path / "other_cluster.json"
    other.write_text(json.dumps(data))
    assert_error(_repair(f"--diff-file={other}", "--source-of-truth=n1"), "cluster elsewhere")


@pytest.mark.usefixtures("unchanged")
def test_source_must_be_one_of_the_diffs_nodes(pg_cluster: Any) -> None:
    partial_path, _ = diff_table(TABLE, nodes="n2,n3")
    files = output_files()
    run = _repair(f"--diff-file={partial_path}", "--source-of-truth=n1")
    assert_error(run, "n1", "not one of the nodes")
    assert output_files() == files
    partial_path.unlink()  # keep the output folder as the fixture found it


@pytest.mark.usefixtures("unchanged")
def test_wrong_number_of_arguments() -> None:
    assert_error(ace("table-repair", CLUSTER, TABLE, "n1"), "CLUSTER DIFF_FILE SOURCE")


def test_table_changed_since_the_diff_is_refused(pg_cluster: Any, diff_path: Path) -> None:
    nodes = Nodes(pg_cluster)
    nodes.execute("n3", ["ALTER TABLE rp_err ADD COLUMN extra int"])
    try:
        rows = nodes.snapshots(TABLE)
        # the diff only involves n1/n2, but the shape of n2 is checked before writing
        nodes.execute("n2", ["ALTER TABLE rp_err ADD COLUMN extra int"])
        run = _repair(f"--diff-file={diff_path}", "--source-of-truth=n1")
        assert_error(run, "node n2", "run table-diff again")
        nodes.execute("n2", ["ALTER TABLE rp_err DROP COLUMN extra"])
        assert nodes.snapshot("n2", TABLE) == rows["n2"]
    finally:
        nodes.execute("n2", ["ALTER TABLE rp_err DROP COLUMN IF EXISTS extra"])
        nodes.execute("n3", ["ALTER TABLE rp_err DROP COLUMN IF EXISTS extra"])


@pytest.mark.usefixtures("unchanged")
def test_rerun_rejects_bad_behavior_and_missing_file(diff_path: Path, tmp_path: Path) -> None:
    run = ace("table-rerun", CLUSTER, TABLE, f"--diff-file={diff_path}", "--behavior=threads")
    assert_error(run, "behavior", "multiprocessing or hostdb")
    run = ace("table-rerun", CLUSTER, TABLE, f"--diff-file={tmp_path / 'gone.json'}")
    assert_error(run, "does not exist")
    run = ace("table-rerun", CLUSTER, "public.rp_other", f"--diff-file={diff_path}")
    assert_error(run, "rp_other")


def test_validation_never_touches_a_database(tmp_path: Path, diff_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The API validates before queueing: it must work with every node unreachable."""
    cluster_dir = tmp_path / "clusters"
    (cluster_dir / CLUSTER).mkdir(parents=True)
    doc = {"cluster_name": CLUSTER,
           "pgedge": {"databases": [{"db_name": "acedb", "db_user": "ace",
                                     "db_password": "x"}]},
           "node_groups": [{"name": n, "public_ip": "192.0.2.1", "port": "1"}
                           for n in ("n1", "n2", "n3")]}
    (cluster_dir / CLUSTER / f"{CLUSTER}.json").write_text(json.dumps(doc))
    monkeypatch.setenv("ACE_CLUSTER_DIR", str(cluster_dir))
    settings = load_settings()
    raw = {"cluster_name": CLUSTER, "table_name": TABLE, "diff_file": str(diff_path)}
    request = validate_repair_request({**raw, "source_of_truth": "n1", "upsert_only": "true"},
                                      settings)
    assert request.upsert_only and request.source_of_truth == "n1"
    assert validate_repair_request(request.to_dict(), settings) == request
    assert validate_rerun_request({**raw, "behavior": "hostdb"}, settings).behavior == "hostdb"
    with pytest.raises(DiffFileError):
        validate_repair_request({**raw, "table_name": "public.other", "source_of_truth": "n1"},
                                settings)


def test_source_given_with_bidirectional_or_fix_nulls_is_ignored() -> None:
    base = {"cluster_name": "c", "table_name": "public.t", "diff_file": "/x.json",
            "source_of_truth": "n1"}
    fix = check_repair_options({**base, "fix_nulls": True})
    assert fix.source_of_truth is None and fix.ignored_source == "n1"
    both = check_repair_options({**base, "bidirectional": "True", "insert_only": "True"})
    assert both.source_of_truth is None and not both.deletes_allowed
    with pytest.raises(BadOptionError, match="insert_only"):
        check_repair_options({**base, "bidirectional": True})


def test_a_repair_stopped_by_a_node_that_is_down_says_nothing_was_changed(
        pg_cluster: Any) -> None:
    """n2's repair was ready when n3 turned out to be down: both are rolled back, and the
    sentence says so, so the operator knows running it again is safe."""
    nodes = Nodes(pg_cluster)
    nodes.on_all(["DROP TABLE IF EXISTS rp_down",
                  "CREATE TABLE rp_down (id int PRIMARY KEY, v text)",
                  "INSERT INTO rp_down SELECT i, 'v' || i FROM generate_series(1, 20) i"])
    nodes.execute("n2", ["UPDATE rp_down SET v = 'n2 changed' WHERE id = 2"])
    nodes.execute("n3", ["UPDATE rp_down SET v = 'n3 changed' WHERE id = 3"])
    path, _ = diff_table("public.rp_down")
    before = nodes.snapshot("n2", "public.rp_down")
    pg_cluster.stop_node(2)
    try:
        run = ace("table-repair", CLUSTER, "public.rp_down", f"--diff-file={path}",
                  "--source-of-truth=n1")
    finally:
        pg_cluster.start_node(2)
    assert_error(run, "n3", "cannot be reached", "No node was changed",
                 "can safely be run again")
    assert nodes.snapshot("n2", "public.rp_down") == before
    again = ace("table-repair", CLUSTER, "public.rp_down", f"--diff-file={path}",
                "--source-of-truth=n1")
    assert again.code == 0, again.stderr
