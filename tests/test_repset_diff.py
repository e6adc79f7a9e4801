"""``ace repset-diff``: the set read on every node, every table diffed, each with its outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import CLUSTER, NODES, assert_one_error_line, execute, on_every_node, run_ace
from spock_fixtures import drop_spock, install_spock_mesh, run_sql

TABLES = ("public.rs_same", "public.rs_diff", "public.rs_gone", "public.rs_nopk")


def _result(run: Any) -> dict[str, Any]:
    # sentences name the file; --quiet prints its path alone
    line = next(ln for ln in run.stdout.splitlines()
                if ln.startswith("Repset diff written to ") or ln.endswith(".json"))
    return json.loads(Path(line.rsplit(" written to ", 1)[-1]).read_text())


@pytest.fixture(scope="module")
def spock_set(pg_cluster: Any) -> Any:
    """Set ``default``: one identical table, one differing, one missing on n3, one failing."""
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {t}" for t in TABLES] + [
        "CREATE TABLE rs_same (id int PRIMARY KEY, v text)",
        "INSERT INTO rs_same SELECT i, 'v' || i FROM generate_series(1, 200) i",
        "CREATE TABLE rs_diff (id int PRIMARY KEY, v text)",
        "INSERT INTO rs_diff SELECT i, 'v' || i FROM generate_series(1, 200) i",
        "CREATE TABLE rs_gone (id int PRIMARY KEY)",
        "CREATE TABLE rs_nopk (id int, v text)",
    ])
    execute(pg_cluster.node_dsn(1), ["UPDATE rs_diff SET v = 'changed' WHERE id = 7"])
    dsns = [pg_cluster.node_dsn(i) for i in range(3)]
    install_spock_mesh(dsns, NODES, TABLES, only=NODES[:2])
    install_spock_mesh(dsns, NODES, [t for t in TABLES if t != "public.rs_gone"], only=NODES[2:])
    run_sql(dsns[2], "DROP TABLE rs_gone")
    yield pg_cluster
    for dsn in dsns:
        drop_spock(dsn)
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {t}" for t in TABLES])


def test_every_table_has_its_outcome(spock_set: Any) -> None:
    run = run_ace("repset-diff", CLUSTER, "default")
    assert run.code == 2, (run.stdout, run.stderr)  # one table failed
    res = _result(run)
    outcomes = {t["table"]: t for t in res["tables"]}
    assert {k: v["outcome"] for k, v in outcomes.items()} == {
        "public.rs_same": "identical", "public.rs_diff": "differs",
        "public.rs_gone": "missing on some nodes", "public.rs_nopk": "failed"}
    assert outcomes["public.rs_diff"]["diff_rows_by_pair"] == {"n1/n2": 1, "n2/n3": 1}
    assert Path(outcomes["public.rs_diff"]["diff_file"]).is_file()
    assert outcomes["public.rs_gone"]["missing_on"] == ["n3"]
    assert "primary key" in outcomes["public.rs_nopk"]["reason"].lower()
    assert res["membership_differences"] == [
        {"table": "public.rs_gone", "in_set_on": ["n1", "n2"], "not_in_set_on": ["n3"]}]
    assert "public.rs_nopk: failed: " in run.stdout
    assert "public.rs_gone: in the set on n1 and n2, not on n3" in run.stdout


def test_skipping_the_failing_table_leaves_differences(spock_set: Any, tmp_path: Path) -> None:
    skip = tmp_path / "skip"
    skip.write_text("public.rs_nopk\n")
    run = run_ace("repset-diff", CLUSTER, "default", f"--skip-file={skip}", "--quiet")
    assert run.code == 1, (run.stdout, run.stderr)
    outcomes = {t["table"]: t["outcome"] for t in _result(run)["tables"]}
    assert outcomes["public.rs_nopk"] == "skipped"


def test_identical_tables_exit_zero(spock_set: Any) -> None:
    run = run_ace("repset-diff", CLUSTER, "default", "--nodes=n1,n3",
                  "--skip-tables=public.rs_nopk,public.rs_diff,public.rs_gone")
    assert run.code == 1  # rs_gone's membership still differs between n1 and n3
    run = run_ace("repset-diff", CLUSTER, "default", "--nodes=n1,n2",
                  "--skip-tables=public.rs_nopk,public.rs_diff")
    assert run.code == 0, (run.stdout, run.stderr)


def test_unknown_set_is_one_sentence(spock_set: Any) -> None:
    run = run_ace("repset-diff", CLUSTER, "no_such_set")
    assert_one_error_line(run, "no_such_set", "none of the nodes")


def test_node_without_replication_is_one_sentence(spock_set: Any) -> None:
    drop_spock(spock_set.node_dsn(2))
    try:
        run = run_ace("repset-diff", CLUSTER, "default")
        assert_one_error_line(run, "n3", "no replication")
    finally:
        install_spock_mesh([spock_set.node_dsn(i) for i in range(3)], NODES,
                           [t for t in TABLES if t != "public.rs_gone"], only=NODES[2:])
