"""table-rerun: re-check only the keys of an earlier diff, in either behaviour.

The answer must not depend on the behaviour, and must be what a fresh
table-diff would say about those keys. Keys are text here, so their order
in the new file (the database's, not Python's) matters too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from repair_helpers import CLUSTER, Nodes, ace, diff_sections, diff_table, repair, rerun

from ace_shared.config import load_settings
from ace_shared.diff.plan import resolve_targets
from ace_shared.diff.request import DiffSpec
from ace_shared.difffile.file import load_diff_file
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.rerun.batch import rerun_batch
from ace_shared.rerun.run import finish_rerun, plan_rerun, rerun_hostdb_job

TABLE = "public.rr_items"


@pytest.fixture
def nodes(pg_cluster: Any) -> Nodes:
    """``rr_items`` with 3000 rows; n2 and n3 differ from n1 on about 1300 keys."""
    n = Nodes(pg_cluster)
    n.on_all(["DROP TABLE IF EXISTS rr_items",
              "CREATE TABLE rr_items (k text COLLATE \"C\" PRIMARY KEY, qty int, note text)",
              "INSERT INTO rr_items SELECT 'k' || i, i, 'note ' || i "
              "FROM generate_series(1, 3000) i"])
    n.execute("n2", ["DELETE FROM rr_items WHERE qty % 7 = 0",
                     "UPDATE rr_items SET note = NULL WHERE qty % 5 = 0",
                     "INSERT INTO rr_items SELECT 'x' || i, i, 'extra' FROM generate_series(1, 50) i"])
    n.execute("n3", ["UPDATE rr_items SET qty = -qty WHERE qty % 11 = 0"])
    return n


def test_both_behaviours_agree_with_a_fresh_diff(nodes: Nodes) -> None:
    path, diff = diff_table(TABLE)
    assert diff["summary"]["diff_rows"] > 1000  # several rerun batches
    # fix some of the listed rows, change others differently, leave the rest
    nodes.execute("n2", ["UPDATE rr_items SET note = 'note ' || qty WHERE qty % 10 = 5",
                         "UPDATE rr_items SET qty = 0 WHERE k = 'k10'"])
    nodes.execute("n3", ["UPDATE rr_items SET qty = -qty WHERE qty < -2000"])
    mp, mp_summary = rerun(TABLE, path, "multiprocessing")
    host, host_summary = rerun(TABLE, path, "hostdb")
    fresh, fresh_diff = diff_table(TABLE)
    assert diff_sections(mp) == diff_sections(host) == fresh_diff["diffs"]
    assert mp_summary["remaining"] == host_summary["remaining"] == fresh_diff["summary"]["diff_rows"]
    assert mp_summary["resolved"] > 0
    assert mp_summary["resolved"] + mp_summary["remaining"] == diff["summary"]["diff_rows"]
    assert mp_summary["rerun_of"] == str(path) and host_summary["behavior"] == "hostdb"
    keys = [r["k"] for r in fresh_diff["diffs"]["n1/n2"]["n1"]]
    assert keys == sorted(keys)  # "C" collation order, as the database sorts


def test_cli_exit_codes_and_summary(nodes: Nodes) -> None:
    path, diff = diff_table(TABLE)
    total = diff["summary"]["diff_rows"]
    run = ace("table-rerun", CLUSTER, TABLE, f"--diff-file={path}")
    assert run.code == 1, run.stderr
    assert f"Of {total:,} rows that differed: 0 resolved, {total:,} still differ." in run.stdout
    new_file = run.path_after("Diffs")
    assert new_file is not None and new_file != path
    assert json.loads(new_file.read_text())["summary"]["rerun_of"] == str(path)

    repair(TABLE, path, source_of_truth="n1")
    for behavior in ("multiprocessing", "hostdb"):
        run = ace("table-rerun", CLUSTER, TABLE, f"--diff-file={path}", f"--behavior={behavior}")
        assert run.code == 0, (behavior, run.stderr)
        assert f"Of {total:,} rows that differed: {total:,} resolved, 0 still differ." in run.stdout


def test_rerun_reads_an_original_format_file(nodes: Nodes, tmp_path: Path) -> None:
    _, diff = diff_table(TABLE)
    bare = {pair: {node: [{**r, "qty": int(r["qty"]) if r["qty"] else None,
                           "_Spock_CommitOrigin_": "0"} for r in rows]
                   for node, rows in sides.items()}
            for pair, sides in diff["diffs"].items()}
    original = tmp_path / "bare.json"
    original.write_text(json.dumps(bare))
    again, summary = rerun(TABLE, original, "hostdb")
    assert diff_sections(again) == diff["diffs"]
    assert summary["previous_diff_rows"] == diff["summary"]["diff_rows"]


@pytest.mark.parametrize("behavior", ["multiprocessing", "hostdb"])
def test_steps_run_as_separate_calls_like_fleet_subtasks(nodes: Nodes, behavior: str) -> None:
    """plan -> one call per part (with JSON-decoded inputs) -> finish from the work folder."""
    path, diff = diff_table(TABLE)
    settings = load_settings()
    raw = {"cluster_name": CLUSTER, "table_name": TABLE, "diff_file": str(path),
           "behavior": behavior}
    plan = json.loads(json.dumps(plan_rerun(raw, settings, f"rr_fleet_{behavior}")))
    if behavior == "hostdb":
        results = [rerun_hostdb_job(plan["work_dir"], settings)]
    else:
        assert len(plan["parts"]) > 1
        spec = DiffSpec.from_dict(plan["spec"])
        _, targets = resolve_targets(spec.cluster_name, spec.dbname, list(spec.nodes), settings,
                                     spec.role)
        sessions = NodeSessions(targets)
        try:
            results = [rerun_batch(plan["spec"], i, sessions) for i in reversed(plan["parts"])]
        finally:
            sessions.close()
    assert all(set(r) >= {"partial_path", "diff_keys"} for r in results)
    assert len(json.dumps(results)) < 2000  # small enough for any result backend
    new_path, merged = finish_rerun(plan["work_dir"], settings.output_dir)
    summary = merged.to_dict()
    assert diff_sections(new_path) == diff["diffs"]
    assert summary["remaining"] == diff["summary"]["diff_rows"]
    assert summary["behavior"] == behavior
    assert not Path(plan["work_dir"]).exists()
    assert load_diff_file(new_path).table == load_diff_file(path).table


@pytest.mark.parametrize("behavior", ["multiprocessing", "hostdb"])
def test_a_failed_rerun_names_the_sqlstate_not_the_value(pg_cluster: Any, behavior: str,
                                                         tmp_path: Path) -> None:
    """A key the node cannot read back fails the rerun in one sentence that quotes no
    value: the server's own message would (``invalid input syntax ... "9x9secret"``)."""
    n = Nodes(pg_cluster)
    n.on_all(["DROP TABLE IF EXISTS rr_ints",
              "CREATE TABLE rr_ints (id int PRIMARY KEY, v text)",
              "INSERT INTO rr_ints SELECT i, 'v' FROM generate_series(1, 20) i"])
    n.execute("n2", ["UPDATE rr_ints SET v = 'w' WHERE id = 7"])
    path, diff = diff_table("public.rr_ints")
    text = path.read_text().replace('"id": "7"', '"id": "9x9secret"')
    assert "9x9secret" in text
    forged = tmp_path / "forged.json"
    forged.write_text(text)
    run = ace("table-rerun", CLUSTER, "public.rr_ints", f"--diff-file={forged}",
              f"--behavior={behavior}")
    assert run.code == 2, (run.stdout, run.stderr)
    assert "9x9secret" not in run.stderr + run.stdout
    assert "SQLSTATE 22P02" in run.stderr, run.stderr
