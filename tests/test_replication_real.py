"""spock-diff and repset-diff on real replication: a pglogical mesh and a native one.

Both meshes are built healthy and replicating, then broken on purpose: on n2 a
table leaves the set (publication), and n3's subscription from n1 is disabled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import run_ace
from replication_setup import (
    autocommit,
    cluster_dir,
    libpq,
    native_mesh,
    pglogical_mesh,
    start_replication_cluster,
    wait_for,
)

CLUSTER = "replclus"


def _result(run: Any, label: str) -> dict[str, Any]:
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith(f"{label} written to "))
    return json.loads(Path(line.split(" written to ", 1)[1]).read_text())


def _found(result: dict[str, Any]) -> set[tuple[tuple[str, ...], str, str, str]]:
    return {(tuple(e["nodes"]), e["kind"], e["identity"], e["differs"])
            for e in result["differences"]}


@pytest.fixture(scope="module")
def repl(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster = start_replication_cluster(tmp_path_factory.mktemp("repl"), cluster_dir())
    try:
        pglogical_mesh(cluster)
        native_mesh(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def healthy(repl: Any) -> dict[str, Any]:
    """What spock-diff says of both meshes before they are broken."""
    runs = {db: run_ace("spock-diff", CLUSTER, f"--dbname={db}") for db in ("acedb", "natdb")}
    return {db: (run.code, _result(run, "Spock diff")) for db, run in runs.items()}


@pytest.fixture(scope="module")
def broken(repl: Any, healthy: dict[str, Any]) -> Any:
    autocommit(libpq(repl, 1, "acedb"),
               "SELECT pglogical.replication_set_remove_table('default', 'pl_b')")
    autocommit(libpq(repl, 2, "acedb"),
               "SELECT pglogical.alter_subscription_disable('sub_n3_n1', true)")
    autocommit(libpq(repl, 1, "natdb"), "ALTER PUBLICATION pub DROP TABLE nt_b")
    autocommit(libpq(repl, 2, "natdb"), "ALTER SUBSCRIPTION sub_n3_n1 DISABLE")
    wait_for("n3's pglogical subscription from n1 to stop", lambda: autocommit(
        libpq(repl, 2, "acedb"), "SELECT status FROM pglogical.show_subscription_status()"
        " WHERE subscription_name = 'sub_n3_n1'")[0][0] == "disabled")
    autocommit(libpq(repl, 0, "acedb"), "INSERT INTO pl_a VALUES (2, 'n3 misses this')")
    wait_for("the row to reach n2", lambda: autocommit(
        libpq(repl, 1, "acedb"), "SELECT count(*) FROM pl_a")[0][0] == 2)
    return repl


@pytest.mark.parametrize("db, system", [("acedb", "pglogical"), ("natdb", "native")])
def test_healthy_meshes_match(healthy: dict[str, Any], db: str, system: str) -> None:
    code, result = healthy[db]
    assert (code, result["differences"]) == (0, [])
    assert {c["system"] for c in result["node_config"].values()} == {system}
    for cfg in result["node_config"].values():
        assert [s["status"] for s in cfg["subscriptions"]] == ["replicating", "replicating"]


BROKEN = {
    (("n1", "n2"), "set table", "{set}: public.{t}", "not in set on n2"),
    (("n2", "n3"), "set table", "{set}: public.{t}", "not in set on n2"),
    (("n1", "n3"), "subscription", "sub_n3_n1", "disabled"),
}


@pytest.mark.parametrize("db, rset, table", [("acedb", "default", "pl_b"),
                                             ("natdb", "pub", "nt_b")])
def test_broken_meshes_name_each_fault(broken: Any, db: str, rset: str, table: str) -> None:
    run = run_ace("spock-diff", CLUSTER, f"--dbname={db}")
    assert run.code == 1, (run.stdout, run.stderr)
    expected = {(p, k, i.format(set=rset, t=table), d) for p, k, i, d in BROKEN}
    assert _found(_result(run, "Spock diff")) == expected


def test_repset_diff_on_pglogical(broken: Any) -> None:
    run = run_ace("repset-diff", CLUSTER, "default")
    assert run.code == 1, (run.stdout, run.stderr)
    res = _result(run, "Repset diff")
    outcomes = {t["table"]: t for t in res["tables"]}
    assert outcomes["public.pl_a"]["outcome"] == "differs"
    assert outcomes["public.pl_a"]["diff_rows_by_pair"] == {"n1/n3": 1, "n2/n3": 1}
    assert outcomes["public.pl_b"]["outcome"] == "identical"
    assert outcomes["public.pl_b"]["membership"]["not_in_set_on"] == ["n2"]


def test_repset_diff_on_a_publication(broken: Any) -> None:
    run = run_ace("repset-diff", CLUSTER, "pub", "--dbname=natdb")
    assert run.code == 1, (run.stdout, run.stderr)
    res = _result(run, "Repset diff")
    assert res["systems"] == {"n1": "native", "n2": "native", "n3": "native"}
    assert {t["table"]: t["outcome"] for t in res["tables"]} == {
        "public.nt_a": "identical", "public.nt_b": "identical"}
    assert res["membership_differences"] == [
        {"table": "public.nt_b", "in_set_on": ["n1", "n3"], "not_in_set_on": ["n2"]}]
