"""``ace schema-diff``: every object kind compared, for every pair of nodes, by identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import (
    CLUSTER,
    assert_one_error_line,
    execute,
    on_every_node,
    output_files,
    run_ace,
)
from schema_fixtures import BASE, EXPECTED_N2, EXPECTED_N3, ON_N2, ON_N3, SCHEMA


def _result(run: Any) -> dict[str, Any]:
    # sentences name the file; --quiet prints its path alone
    line = next(ln for ln in run.stdout.splitlines()
                if ln.startswith("Schema diff written to ") or ln.endswith(".json"))
    return json.loads(Path(line.rsplit(" written to ", 1)[-1]).read_text())


def _entries(result: dict[str, Any], pair: str) -> set[tuple[str, str, str]]:
    a, b = pair.split("/")
    return {(e["kind"], e["identity"], e["differs"]) for e in result["differences"]
            if e["nodes"] == [a, b]}


@pytest.fixture(scope="module")
def schema(pg_cluster: Any) -> Any:
    on_every_node(pg_cluster, BASE)
    execute(pg_cluster.node_dsn(1), ON_N2)
    execute(pg_cluster.node_dsn(2), ON_N3)
    yield pg_cluster
    on_every_node(pg_cluster, [f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"])


@pytest.fixture(scope="module")
def result(schema: Any) -> dict[str, Any]:
    run = run_ace("schema-diff", CLUSTER, SCHEMA)
    assert run.code == 1, (run.stdout, run.stderr)
    return _result(run)


def test_every_kind_differs_on_the_pair_that_differs(result: dict[str, Any]) -> None:
    assert _entries(result, "n1/n2") == EXPECTED_N2


def test_a_pair_reports_only_its_own_differences(result: dict[str, Any]) -> None:
    assert _entries(result, "n1/n3") == EXPECTED_N3
    # n2 against n3: both sets of changes, except what hangs on the table n3 lacks
    flipped = {(k, i, d.replace("missing on n1", "missing on n3")) for k, i, d in EXPECTED_N2}
    flipped.discard(("table", "extra", "replica identity"))
    assert _entries(result, "n2/n3") == EXPECTED_N3 | flipped


def test_overloads_are_matched_by_signature(result: dict[str, Any]) -> None:
    entries = [e for e in result["differences"] if e["kind"] == "function"
               and e["nodes"] == ["n1", "n2"]]
    assert [e["identity"] for e in entries if e["differs"] == "volatility"] == ["f(x text)"]
    vol = next(e for e in entries if e["identity"] == "f(x text)")
    assert vol["values"] == {"n1": "immutable", "n2": "volatile"}


def test_values_of_each_node_are_reported(result: dict[str, Any]) -> None:
    by_key = {(e["kind"], e["identity"], e["differs"]): e for e in result["differences"]
              if e["nodes"] == ["n1", "n2"]}
    amount = by_key[("column", "lines.price", "type")]
    assert amount["values"] == {"n1": "numeric(10,2)", "n2": "numeric(12,2)"}
    mood = by_key[("type", "mood", "labels")]
    assert mood["values"]["n2"] == ["sad", "meh", "ok", "happy"]
    extra = [e for e in result["differences"] if e.get("missing_on") == "n3" and e["kind"] == "table"]
    assert [(e["kind"], e["identity"]) for e in extra] == [("table", "extra"), ("table", "extra")]
    assert extra[0]["values"] == {"n1": "present", "n3": "missing on n3"}


def test_identical_nodes_exit_zero(schema: Any) -> None:
    run = run_ace("schema-diff", CLUSTER, SCHEMA, "--nodes=n1,n3", "--skip-tables=extra",
                  "--quiet")
    assert run.code == 1  # f(int) still differs
    res = _result(run)
    assert {(e["kind"], e["identity"]) for e in res["differences"]} == {("function", "f(x integer)")}


def test_skip_file_leaves_tables_out(schema: Any, tmp_path: Path) -> None:
    skip = tmp_path / "skip.txt"
    skip.write_text("# tables handled elsewhere\nsdx.lines\n\"Mixed Case\"\n")
    run = run_ace("schema-diff", CLUSTER, SCHEMA, "--nodes=n1,n2", f"--skip-file={skip}")
    kinds = {(e["kind"], e["identity"]) for e in _result(run)["differences"]}
    assert not any(i.startswith(("lines", '"Mixed Case"')) for _, i in kinds)
    assert ("column", "orders.code") in kinds


def test_unknown_schema_is_one_sentence(schema: Any) -> None:
    before = output_files()
    run = run_ace("schema-diff", CLUSTER, "no_such_schema")
    assert_one_error_line(run, "no_such_schema", "none of the nodes")
    assert output_files() == before


@pytest.fixture
def data_schema(pg_cluster: Any) -> Any:
    on_every_node(pg_cluster, [
        "DROP SCHEMA IF EXISTS sdd CASCADE", "CREATE SCHEMA sdd",
        "CREATE TABLE sdd.same (id int PRIMARY KEY, v text)",
        "INSERT INTO sdd.same SELECT i, 'v' || i FROM generate_series(1, 300) i",
        "CREATE TABLE sdd.apart (id int PRIMARY KEY, v text)",
        "INSERT INTO sdd.apart SELECT i, 'v' || i FROM generate_series(1, 300) i",
        "CREATE TABLE sdd.nokey (v text)"])
    execute(pg_cluster.node_dsn(2), ["UPDATE sdd.apart SET v = NULL WHERE id = 3",
                                     "CREATE TABLE sdd.only_n3 (id int PRIMARY KEY)"])
    yield pg_cluster
    on_every_node(pg_cluster, ["DROP SCHEMA IF EXISTS sdd CASCADE"])


def test_ddl_only_false_diffs_every_common_table(data_schema: Any) -> None:
    run = run_ace("schema-diff", CLUSTER, "sdd", "--ddl-only=False")
    assert run.code == 2, (run.stdout, run.stderr)  # sdd.nokey cannot be diffed
    res = _result(run)
    assert [(e["identity"], e["differs"]) for e in res["differences"]] == [
        ("only_n3", "missing on n1"), ("only_n3", "missing on n2")]
    outcomes = {t["table"]: t["outcome"] for t in res["tables"]}
    assert outcomes == {"sdd.apart": "differs", "sdd.nokey": "failed", "sdd.same": "identical"}
    run = run_ace("schema-diff", CLUSTER, "sdd", "--ddl-only=false", "--skip-tables=nokey",
                  "--nodes=n1,n2")
    assert run.code == 0, (run.stdout, run.stderr)
    assert "SCHEMAS MATCH" in run.stdout
    assert {t["table"] for t in _result(run)["tables"]} == {"sdd.apart", "sdd.same"}


def test_a_node_down_is_named(pg_cluster: Any, tmp_path: Path) -> None:
    import os

    from localcluster import free_ports
    doc = json.loads((Path(os.environ["ACE_CLUSTER_DIR"]) / CLUSTER / f"{CLUSTER}.json")
                     .read_text())
    doc["cluster_name"] = "downclus"
    doc["node_groups"][1]["port"] = str(free_ports(1, 18000, 18999)[0])
    folder = Path(os.environ["ACE_CLUSTER_DIR"]) / "downclus"
    folder.mkdir(exist_ok=True)
    (folder / "downclus.json").write_text(json.dumps(doc))
    before = output_files()
    for args in (("schema-diff", "downclus", "public"), ("spock-diff", "downclus"),
                 ("repset-diff", "downclus", "default")):
        run = run_ace(*args)
        assert_one_error_line(run, "node n2 cannot be reached")
    assert output_files() == before
