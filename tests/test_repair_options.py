"""What each table-repair option does to the nodes, seen from the data and the output.

Every test builds ``rp_opts`` afresh on the three nodes, makes some nodes
differ, diffs, repairs, and then looks at the rows each node holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from repair_helpers import NODES, Nodes, ace, diff_table, repair

from ace_shared.errors import PermissionDeniedError

TABLE = "public.rp_opts"
DDL = "CREATE TABLE rp_opts (id int PRIMARY KEY, a text, b int, n numeric)"
BASE = "INSERT INTO rp_opts SELECT i, 'a' || i, i, i * 1.10 FROM generate_series(1, 10) i"


@pytest.fixture
def nodes(pg_cluster: Any) -> Nodes:
    n = Nodes(pg_cluster)
    n.on_all(["DROP TABLE IF EXISTS rp_opts CASCADE", DDL, BASE])
    return n


def _rows(nodes: Nodes, node: str) -> dict[int, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in nodes.query(node, "SELECT id, a, b, n::text FROM rp_opts")}


def _diverge_n2(nodes: Nodes) -> None:
    """n2 lacks row 1, has row 2 changed and holds rows 100 and 101 that n1 lacks."""
    nodes.execute("n2", ["DELETE FROM rp_opts WHERE id = 1",
                         "UPDATE rp_opts SET a = 'changed' WHERE id = 2",
                         "INSERT INTO rp_opts VALUES (100, 'x', 100, 1), (101, 'y', 101, 2)"])


def test_default_repair_makes_the_node_equal_to_the_source(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    run = ace("table-repair", "testclus", TABLE, f"--diff-file={path}", "--source-of-truth=n1")
    assert run.code == 0, run.stderr
    assert "n2: inserted 1, updated 1, deleted 2 rows" in run.stdout
    assert nodes.snapshot("n2", TABLE) == nodes.snapshot("n1", TABLE)


def test_upsert_only_keeps_and_lists_rows_the_source_lacks(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path),
              "--source-of-truth", "n1", "--upsert-only", "--generate-report")
    assert run.code == 0, run.stderr
    assert "rows kept that n1 lacks: 100, 101" in run.stdout
    rows = _rows(nodes, "n2")
    assert rows[1] == ("a1", 1, "1.10") and rows[2] == ("a2", 2, "2.20")
    assert rows[100] == ("x", 100, "1") and rows[101] == ("y", 101, "2")
    report = json.loads(run.path_after("Report").read_text())
    kept = report["changes"]["n2"]["kept"]
    assert [r["id"] for r in kept] == ["100", "101"]
    assert report["changes"]["n2"]["counts"]["deleted"] == 0


def test_insert_only_inserts_missing_rows_and_nothing_else(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    result = repair(TABLE, path, source_of_truth="n1", insert_only=True)
    assert result["nodes"]["n2"] == {"inserted": 1, "updated": 0, "deleted": 0, "kept": 2,
                                     "skipped_updates": 1, "filled": 0, "unchanged": 0}
    rows = _rows(nodes, "n2")
    assert rows[1] == ("a1", 1, "1.10")
    assert rows[2][0] == "changed"
    assert 100 in rows and 101 in rows


def test_bidirectional_copies_rows_missing_on_either_side(nodes: Nodes) -> None:
    nodes.execute("n1", ["INSERT INTO rp_opts VALUES (50, 'only n1', 50, 5)",
                         "UPDATE rp_opts SET a = 'n1 version' WHERE id = 3"])
    nodes.execute("n2", ["INSERT INTO rp_opts VALUES (60, 'only n2', 60, 6)"])
    nodes.execute("n3", ["INSERT INTO rp_opts VALUES (70, 'only n3', 70, 7)",
                         "DELETE FROM rp_opts WHERE id = 4"])
    path, _ = diff_table(TABLE)
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--insert-only",
              "--bidirectional")
    assert run.code == 0, run.stderr
    for node in NODES:
        rows = _rows(nodes, node)
        assert {50, 60, 70, 4} <= set(rows), node
        assert rows[70] == ("only n3", 70, "7")
    # a row present everywhere but different is not touched
    assert _rows(nodes, "n1")[3][0] == "n1 version"
    assert _rows(nodes, "n2")[3][0] == "a3"


def test_fix_nulls_fills_columns_from_the_other_node(nodes: Nodes) -> None:
    nodes.execute("n1", ["UPDATE rp_opts SET a = NULL, b = 5 WHERE id = 3"])
    nodes.execute("n2", ["UPDATE rp_opts SET a = 'x', b = NULL WHERE id = 3",
                         "UPDATE rp_opts SET a = 'other' WHERE id = 6"])
    path, _ = diff_table(TABLE)
    result = repair(TABLE, path, fix_nulls=True, source_of_truth="n3")
    assert any("ignored" in note for note in result["notes"])
    assert _rows(nodes, "n1")[3] == ("x", 5, "3.30")
    assert _rows(nodes, "n2")[3] == ("x", 5, "3.30")
    assert _rows(nodes, "n3")[3] == ("a3", 3, "3.30")
    # values that differ without a NULL stay as they are
    assert _rows(nodes, "n2")[6][0] == "other"
    assert result["nodes"]["n1"]["filled"] == 1 and result["nodes"]["n2"]["filled"] == 1


def test_dry_run_writes_nothing_and_says_what_it_would_do(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    nodes.execute("n3", ["UPDATE rp_opts SET n = 0 WHERE id = 9"])
    path, _ = diff_table(TABLE)
    before = nodes.snapshots(TABLE)
    run = ace("table-repair", "testclus", TABLE, f"--diff-file={path}", "--source-of-truth=n1",
              "--dry-run=True", "--generate-report=True")
    assert run.code == 0, run.stderr
    assert nodes.snapshots(TABLE) == before
    assert "DRY RUN" in run.stdout
    assert "n2: would insert 1, would update 1, would delete 2 rows" in run.stdout
    assert "n3: would insert 0, would update 1, would delete 0 rows" in run.stdout
    assert "would delete: 100, 101" in run.stdout
    report = json.loads(run.path_after("Report").read_text())
    assert report["mode"] == "dry_run"
    assert [r["id"] for r in report["changes"]["n2"]["inserted"]] == ["1"]
    assert report["changes"]["n3"]["updated"] == [{"id": "9", "a": "a9", "b": "9", "n": "9.90"}]


def test_report_has_arguments_changes_and_no_password(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    result = repair(TABLE, path, source_of_truth="n1", generate_report=True)
    report_path = Path(result["report_file"])
    assert re.fullmatch(r"reports/\d{4}-\d{2}-\d{2}/repair_\d{9}\.json",
                        report_path.relative_to(report_path.parents[2]).as_posix())
    text = report_path.read_text()
    assert "ace_pw" not in text
    report = json.loads(text)
    assert report["arguments"]["source_of_truth"] == "n1"
    assert report["arguments"]["diff_file"] == str(path)
    assert [r["id"] for r in report["changes"]["n2"]["deleted"]] == ["100", "101"]
    assert [r["id"] for r in report["changes"]["n2"]["updated"]] == ["2"]
    assert report["run_time"] >= 0


@pytest.mark.parametrize("failing", ["check", "unique"])
def test_failure_on_one_node_changes_no_node(nodes: Nodes, failing: str) -> None:
    nodes.execute("n1", ["UPDATE rp_opts SET b = 5000, a = 'a1' WHERE id = 5"])
    nodes.execute("n2", ["UPDATE rp_opts SET a = 'stale' WHERE id = 7"])
    if failing == "check":
        bad = "n3"
        nodes.execute("n3", ["ALTER TABLE rp_opts ADD CONSTRAINT rp_small CHECK (b < 1000)"])
    else:
        bad = "n2"  # row 5 takes a = 'a1', which row 1 holds already
        nodes.execute("n2", ["ALTER TABLE rp_opts ADD CONSTRAINT rp_uniq_a UNIQUE (a)"])
    path, _ = diff_table(TABLE)
    before = nodes.snapshots(TABLE)
    run = ace("table-repair", "testclus", TABLE, f"--diff-file={path}", "--source-of-truth=n1")
    assert run.code == 2
    assert f"node {bad}" in run.stderr
    assert "No node was changed" in run.stderr
    assert nodes.snapshots(TABLE) == before


def test_positional_form_of_the_original_tool(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    run = ace("table-repair", "testclus", str(path), "n1", TABLE)
    assert run.code == 0, run.stderr
    assert nodes.snapshot("n2", TABLE) == nodes.snapshot("n1", TABLE)


def _original_format(diff: dict[str, Any]) -> str:
    """The original tool's file: bare pairs, numbers as JSON numbers, commit metadata."""
    out: dict[str, Any] = {}
    for pair, sides in diff["diffs"].items():
        out[pair] = {}
        for node, rows in sides.items():
            out[pair][node] = [
                {"id": int(r["id"]), "a": r["a"], "b": int(r["b"]) if r["b"] else None,
                 "n": f"@raw@{r['n']}", "_Spock_CommitTS_": "2024-01-01 00:00:00+00",
                 "_Spock_CommitOrigin_": None}
                for r in rows]
    return re.sub(r'"@raw@([^"]*)"', r"\1", json.dumps(out, indent=1))


def test_original_format_diff_file_with_json_numbers(nodes: Nodes, tmp_path: Path) -> None:
    _diverge_n2(nodes)
    nodes.execute("n2", ["UPDATE rp_opts SET n = 7 WHERE id = 6"])
    _, diff = diff_table(TABLE)
    original = tmp_path / "original_diff.json"
    original.write_text(_original_format(diff))
    assert '"n": 6.60' in original.read_text()
    result = repair(TABLE, original, source_of_truth="n1")
    assert result["nodes"]["n2"]["updated"] == 2
    assert nodes.snapshot("n2", TABLE) == nodes.snapshot("n1", TABLE)
    assert _rows(nodes, "n2")[6][2] == "6.60"


def test_triggers_fire_only_when_asked_and_always_triggers_always(nodes: Nodes) -> None:
    nodes.execute("n2", [
        "CREATE TABLE IF NOT EXISTS rp_trigger_log (name text, op text, who text)",
        "TRUNCATE rp_trigger_log",
        "CREATE OR REPLACE FUNCTION rp_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO public.rp_trigger_log VALUES (TG_NAME, TG_OP, current_user); RETURN NULL; "
        "END $$",
        "CREATE TRIGGER rp_ordinary AFTER INSERT OR UPDATE OR DELETE ON rp_opts "
        "FOR EACH ROW EXECUTE FUNCTION rp_log()",
        "CREATE TRIGGER rp_always AFTER INSERT OR UPDATE OR DELETE ON rp_opts "
        "FOR EACH ROW EXECUTE FUNCTION rp_log()",
        "ALTER TABLE rp_opts ENABLE ALWAYS TRIGGER rp_always",
        "UPDATE rp_opts SET a = 'changed' WHERE id = 2",
        "TRUNCATE rp_trigger_log",
    ])
    path, _ = diff_table(TABLE)
    repair(TABLE, path, source_of_truth="n1")
    fired = nodes.query("n2", "SELECT name, op FROM rp_trigger_log ORDER BY name")
    assert fired == [("rp_always", "UPDATE")]

    nodes.execute("n2", ["UPDATE rp_opts SET a = 'changed' WHERE id = 2",
                         "TRUNCATE rp_trigger_log"])
    path, _ = diff_table(TABLE)
    repair(TABLE, path, source_of_truth="n1", fire_triggers=True)
    fired = nodes.query("n2", "SELECT name, op FROM rp_trigger_log ORDER BY name")
    assert fired == [("rp_always", "UPDATE"), ("rp_ordinary", "UPDATE")]
    nodes.execute("n2", ["DROP TABLE rp_trigger_log"])


def _commit_origin(nodes: Nodes, node: str, row_id: int) -> str | None:
    found = nodes.query(node, "SELECT r.roname FROM rp_opts t, "
                              "pg_xact_commit_timestamp_origin(t.xmin) o "
                              "LEFT JOIN pg_replication_origin r ON r.roident = o.roident "
                              "WHERE t.id = %s", (row_id,))
    return found[0][0]


def test_repair_is_tagged_with_a_replication_origin_without_spock(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    repair(TABLE, path, source_of_truth="n1")
    assert _commit_origin(nodes, "n2", 1) == "ace_repair"
    assert _commit_origin(nodes, "n2", 2) == "ace_repair"
    assert _commit_origin(nodes, "n2", 3) is None  # untouched rows keep their own commit


@pytest.fixture
def fake_spock_on_n2(nodes: Nodes) -> Any:
    """``spock.repair_mode(boolean)`` on n2 that records each call, its transaction and role."""
    saved = nodes.query("n2", "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace "
                              "s ON s.oid = p.pronamespace WHERE s.nspname = 'spock' "
                              "AND p.proname = 'repair_mode'")
    had_schema = bool(nodes.query("n2", "SELECT 1 FROM pg_namespace WHERE nspname = 'spock'"))
    nodes.execute("n2", [
        "CREATE SCHEMA IF NOT EXISTS spock",
        "DROP TABLE IF EXISTS rp_spock_calls",
        "CREATE TABLE rp_spock_calls (n serial, enabled boolean, xid text, srr text)",
        "CREATE OR REPLACE FUNCTION spock.repair_mode(enabled boolean) RETURNS boolean "
        "LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.rp_spock_calls (enabled, xid, srr) "
        "VALUES (enabled, pg_current_xact_id()::text, "
        "current_setting('session_replication_role')); RETURN true; END $$",
    ])
    yield
    restore = ["DROP TABLE rp_spock_calls", "DROP FUNCTION spock.repair_mode(boolean)"]
    if saved:
        restore.append(saved[0][0])
    elif not had_schema:
        restore.append("DROP SCHEMA spock")
    nodes.execute("n2", restore)


@pytest.mark.usefixtures("fake_spock_on_n2")
def test_with_spock_the_repair_runs_inside_repair_mode(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    repair(TABLE, path, source_of_truth="n1")
    calls = nodes.query("n2", "SELECT enabled, xid, srr FROM rp_spock_calls ORDER BY n")
    assert [c[0] for c in calls] == [True, False]
    assert calls[0][1] == calls[1][1]
    assert calls[0][2] == "replica"
    repaired_xid = nodes.query("n2", "SELECT xmin::text FROM rp_opts WHERE id = 1")[0][0]
    assert repaired_xid == calls[0][1]
    assert _commit_origin(nodes, "n2", 1) is None  # Spock's repair mode, not an origin


@pytest.fixture
def roles_on_n2(nodes: Nodes) -> Any:
    drop = ["DROP OWNED BY rp_writer, rp_reader", "DROP ROLE rp_writer", "DROP ROLE rp_reader"]
    existing = nodes.query("n2", "SELECT count(*) FROM pg_roles "
                                 "WHERE rolname IN ('rp_writer', 'rp_reader')")[0][0]
    if existing == 2:
        nodes.execute_as_admin("n2", drop)
    nodes.execute_as_admin("n2", ["CREATE ROLE rp_writer", "CREATE ROLE rp_reader",
                         "GRANT ALL ON rp_opts TO rp_writer",
                         "GRANT SELECT ON rp_opts TO rp_reader"])
    for role in ("rp_writer", "rp_reader"):  # ACE logs in as them (docs/security.md)
        nodes.cluster.serve_role(role, repair=True)
    yield
    nodes.execute_as_admin("n2", drop)


@pytest.mark.usefixtures("roles_on_n2")
def test_repair_acts_as_the_requesting_role(nodes: Nodes) -> None:
    _diverge_n2(nodes)
    path, _ = diff_table(TABLE)
    before = nodes.snapshots(TABLE)
    with pytest.raises(PermissionDeniedError, match="node n2"):
        repair(TABLE, path, source_of_truth="n1", role="rp_reader")
    assert nodes.snapshots(TABLE) == before
    nodes.execute("n2", [
        "CREATE TABLE IF NOT EXISTS rp_who (who text)",
        "GRANT ALL ON rp_who TO rp_writer",
        "CREATE OR REPLACE FUNCTION rp_who() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO public.rp_who VALUES (current_user); RETURN NULL; END $$",
        "CREATE TRIGGER rp_who AFTER INSERT ON rp_opts FOR EACH ROW EXECUTE FUNCTION rp_who()",
    ])
    repair(TABLE, path, source_of_truth="n1", role="rp_writer", fire_triggers=True)
    assert nodes.snapshot("n2", TABLE) == nodes.snapshot("n1", TABLE)
    assert nodes.query("n2", "SELECT who FROM rp_who") == [("rp_writer",)]
    nodes.execute("n2", ["DROP TABLE rp_who CASCADE"])


def test_identity_and_generated_columns_are_repaired(pg_cluster: Any) -> None:
    """Identity (GENERATED ALWAYS) keys are written as they were; stored generated columns
    are left for each node to compute."""
    nodes = Nodes(pg_cluster)
    nodes.on_all(["DROP TABLE IF EXISTS rp_gen",
                  "CREATE TABLE rp_gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, b int, "
                  "twice int GENERATED ALWAYS AS (b * 2) STORED)",
                  "INSERT INTO rp_gen (b) SELECT g FROM generate_series(1, 20) g"])
    nodes.execute("n2", ["DELETE FROM rp_gen WHERE id IN (3, 4)",
                         "UPDATE rp_gen SET b = 100 WHERE id = 5"])
    path, _ = diff_table("public.rp_gen")
    result = repair("public.rp_gen", path, source_of_truth="n1")
    assert result["nodes"]["n2"]["inserted"] == 2 and result["nodes"]["n2"]["updated"] == 1
    assert nodes.snapshot("n2", "public.rp_gen") == nodes.snapshot("n1", "public.rp_gen")
