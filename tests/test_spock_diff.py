"""``ace spock-diff`` on Spock's catalog (built from its published definitions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import CLUSTER, NODES, assert_one_error_line, on_every_node, run_ace
from spock_fixtures import drop_spock, install_spock_mesh, run_sql

TABLES = ("public.sp_a", "public.sp_b")


def _result(run: Any) -> dict[str, Any]:
    # sentences name the file; --quiet prints its path alone
    line = next(ln for ln in run.stdout.splitlines()
                if ln.startswith("Spock diff written to ") or ln.endswith(".json"))
    return json.loads(Path(line.rsplit(" written to ", 1)[-1]).read_text())


@pytest.fixture
def mesh(pg_cluster: Any) -> Any:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS sp_a, sp_b, sp_loose, sp_nokey",
        "CREATE TABLE sp_a (id int PRIMARY KEY)", "CREATE TABLE sp_b (id int PRIMARY KEY)",
        "CREATE TABLE sp_loose (id int PRIMARY KEY)", "CREATE TABLE sp_nokey (v text)"])
    dsns = [pg_cluster.node_dsn(i) for i in range(3)]
    install_spock_mesh(dsns, NODES, (*TABLES, "public.sp_nokey"))
    yield dsns
    for dsn in dsns:
        drop_spock(dsn)
    on_every_node(pg_cluster, ["DROP TABLE IF EXISTS sp_a, sp_b, sp_loose, sp_nokey"])


def test_a_healthy_mesh_matches_with_hints(mesh: list[str]) -> None:
    run = run_ace("spock-diff", CLUSTER)
    assert run.code == 0, (run.stdout, run.stderr)
    res = _result(run)
    assert res["differences"] == []
    cfg = res["node_config"]["n2"]
    assert cfg["system"] == "spock" and cfg["identity"] == "n2"
    assert sorted(s["provider"] for s in cfg["subscriptions"]) == ["n1", "n3"]
    hints = {(h["node"], h["hint"].split(":")[0], h.get("table")) for h in res["hints"]}
    for node in NODES:
        assert (node, "table in no replication set", "public.sp_loose") in hints
        assert (node, "table in a set without a primary key or replica identity",
                "public.sp_nokey") in hints
    assert "REPLICATION MATCHES on n1, n2 and n3." in run.stdout


def test_a_broken_mesh_reports_each_fault_on_its_pair(mesh: list[str]) -> None:
    n1, n2, n3 = mesh
    run_sql(n3, "UPDATE spock.subscription SET sub_enabled = false WHERE sub_name = 'sub_n3_n1'")
    run_sql(n2, "UPDATE spock.subscription SET sub_forward_origins = '{all}'"
                " WHERE sub_name = 'sub_n2_n3'")
    run_sql(n1, "DELETE FROM spock.subscription WHERE sub_name = 'sub_n1_n2'")
    run_sql(n2, "DELETE FROM spock.replication_set_table WHERE set_reloid = 'sp_b'::regclass")
    run_sql(n3, "UPDATE spock.replication_set SET replicate_delete = false"
                " WHERE set_name = 'default'")
    run_sql(n3, "INSERT INTO spock.test_sub_status VALUES ('sub_n3_n2', 'down')")
    run = run_ace("spock-diff", CLUSTER)
    assert run.code == 1, (run.stdout, run.stderr)
    found = {(tuple(e["nodes"]), e["kind"], e["identity"], e["differs"])
             for e in _result(run)["differences"]}
    assert found == {
        (("n1", "n2"), "subscription", "n1 <-> n2", "n2 subscribes to n1, but n1 not to n2"),
        (("n1", "n2"), "set table", "default: public.sp_b", "not in set on n2"),
        (("n1", "n3"), "subscription", "sub_n3_n1", "disabled"),
        (("n1", "n3"), "replication set", "default", "replicate_delete"),
        (("n2", "n3"), "set table", "default: public.sp_b", "not in set on n2"),
        (("n2", "n3"), "subscription", "sub_n3_n2", "down"),
        (("n2", "n3"), "subscription", "n2 <-> n3", "forward origins"),
        (("n2", "n3"), "replication set", "default", "replicate_delete"),
    }
    assert "n1/n3: subscription sub_n3_n1: disabled differs" not in run.stdout


def test_a_node_without_replication_is_one_sentence(mesh: list[str]) -> None:
    drop_spock(mesh[1])
    run = run_ace("spock-diff", CLUSTER)
    assert_one_error_line(run, "n2", "no replication")


def test_unknown_node_is_one_sentence(mesh: list[str]) -> None:
    run = run_ace("spock-diff", CLUSTER, "--nodes=n1,n9")
    assert_one_error_line(run, "n9")
