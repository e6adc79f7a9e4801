"""Kept keys: a re-check reads a differing leaf by the keys changed since it last agreed.

Once a re-check has found a leaf equal on the nodes it compared, the keys
changed after that are kept, and a later re-check that finds the leaf
differing probes those keys instead of reading its rows. The diff must stay
exactly a full table-diff's, including when re-checks compare different sets
of nodes, when a key changes and changes back, and after a TRUNCATE.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, execute, mtree_init, on_every_node, query, run_ace

from ace_shared.config import load_settings
from ace_shared.diff import queries
from ace_shared.diff.ranges import KeyRange
from ace_shared.mtree import compare, keytypes
from ace_shared.mtree.objects import tree_key
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job, table_shape
from ace_shared.nodes.ident import TableName


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    assert mtree_init().code == 0


def _tracked(cluster: Any, name: str, rows: int = 6000,
             first_nodes: tuple[str, ...] = ()) -> str:
    """``public.<name>``, ``rows`` rows the same on every node (60 leaves of 100 at 6000),
    its tree built and re-checked once (of ``first_nodes``, else all), so every leaf agreed."""
    on_every_node(cluster, [
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id bigint PRIMARY KEY, v text)",
        f"INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, {rows}) g",
    ])
    table = f"public.{name}"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    first = _recheck(table, *first_nodes)
    assert first["summary"]["diff_rows"] == 0
    return table


def _recheck(table: str, *nodes: str) -> dict[str, Any]:
    """``ace mtree table-diff`` (of ``nodes``, else all), checked against a full table-diff of
    the same nodes: the same rows, the same counts."""
    args = [f"--nodes={','.join(nodes)}"] if nodes else []
    tree_run = run_ace("mtree", "table-diff", CLUSTER, table, *args)
    assert tree_run.code in (0, 1), (tree_run.stdout, tree_run.stderr)
    full_run = run_ace("table-diff", CLUSTER, table, *args)
    assert full_run.code == tree_run.code, (tree_run.stdout, full_run.stdout)
    tree, full = tree_run.diff(), full_run.diff()
    assert tree["diffs"] == full["diffs"]
    for field in ("diff_rows", "total_rows_checked", "diff_rows_by_pair"):
        assert tree["summary"][field] == full["summary"][field], field
    return tree


def _kept(cluster: Any, table: str, node: int) -> int:
    schema, name = table.split(".")
    kept = f'ace_mtree."keys_{tree_key(TableName(schema, name))}"'
    return int(query(cluster.node_dsn(node), f"SELECT count(*) FROM {kept}")[0][0])


def test_a_change_in_every_leaf_after_they_agreed_is_read_by_its_keys(pg_cluster: Any) -> None:
    """Changes in every leaf, on two nodes, at both ends and changed back: the re-check
    probes the changed keys, reads no leaf, and finds what a full diff finds; the whole
    table is no longer compared as table-diff does."""
    table = _tracked(pg_cluster, "mk_every")
    execute(pg_cluster.node_dsn(1), [
        "UPDATE mk_every SET v = 'n2' WHERE id % 60 = 7",
        "DELETE FROM mk_every WHERE id IN (1, 3001, 6000)",
        "INSERT INTO mk_every VALUES (-5, 'before the first'), (9000, 'after the last')",
        "UPDATE mk_every SET v = 'back' WHERE id = 2222",  # changed and put back:
        "UPDATE mk_every SET v = 'v2222' WHERE id = 2222",  # kept, yet equal everywhere
    ])
    execute(pg_cluster.node_dsn(2), ["UPDATE mk_every SET v = 'n3' WHERE id % 500 = 11"])
    diff = _recheck(table)
    mtree = diff["summary"]["mtree"]
    assert diff["summary"]["diff_rows"] == 100 + 3 + 2 + 12
    assert mtree["leaves_differing"] >= 60
    assert mtree["leaves_by_keys"] == mtree["leaves_differing"]
    assert mtree["leaves_read"] == 0 and mtree["compared_as"] == "leaves"


def test_a_leaf_that_keeps_differing_keeps_its_keys_until_it_agrees(pg_cluster: Any) -> None:
    table = _tracked(pg_cluster, "mk_keeps")
    execute(pg_cluster.node_dsn(1), ["UPDATE mk_keeps SET v = 'n2' WHERE id = 150"])
    first = _recheck(table)
    assert first["summary"]["diff_rows"] == 1
    assert first["summary"]["mtree"]["leaves_by_keys"] == 1
    said = run_ace("mtree", "table-diff", CLUSTER, table)  # and the operator is told so
    assert said.code == 1
    assert ("1 leaf of the Merkle tree differs: 1 checked by the keys changed since it last "
            "agreed, 0 leaves read whole.") in said.stdout.splitlines(), said.stdout
    # a second change in the same leaf, on another node: the first key is still kept
    execute(pg_cluster.node_dsn(2), ["UPDATE mk_keeps SET v = 'n3' WHERE id = 160"])
    second = _recheck(table)
    assert second["summary"]["diff_rows"] == 2
    assert second["summary"]["mtree"]["leaves_by_keys"] == 1
    assert [_kept(pg_cluster, table, n) for n in range(3)] == [0, 1, 1]
    # repaired: the leaf agrees again, and its keys go
    execute(pg_cluster.node_dsn(1), ["UPDATE mk_keeps SET v = 'v150' WHERE id = 150"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mk_keeps SET v = 'v160' WHERE id = 160"])
    assert _recheck(table)["summary"]["diff_rows"] == 0
    assert [_kept(pg_cluster, table, n) for n in range(3)] == [0, 0, 0]


def test_agreeing_on_some_nodes_does_not_hide_a_difference_with_another(
        pg_cluster: Any) -> None:
    """Re-checks of n1 and n2 alone mark the leaves agreed on those two. n1 and n2 then
    change a row alike, n3 does not: a re-check of n1 and n2 finds the leaf equal and
    drops their kept keys, and a re-check of n1 and n3 must still find the row (their
    marks differ, so the leaf is read whole)."""
    table = _tracked(pg_cluster, "mk_subset", first_nodes=("n1", "n2"))
    for node in (0, 1):
        execute(pg_cluster.node_dsn(node), ["UPDATE mk_subset SET v = 'moved on' WHERE id = 77"])
    assert _recheck(table, "n1", "n2")["summary"]["diff_rows"] == 0
    assert [_kept(pg_cluster, table, n) for n in range(3)] == [0, 0, 0]
    with_n3 = _recheck(table, "n1", "n3")
    assert with_n3["summary"]["diff_rows"] == 1
    assert with_n3["summary"]["mtree"]["leaves_by_keys"] == 0  # read whole
    assert _recheck(table)["summary"]["diff_rows"] == 1
    # all three agree again: the next change there is read by its key
    execute(pg_cluster.node_dsn(2), ["UPDATE mk_subset SET v = 'moved on' WHERE id = 77"])
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(2), ["UPDATE mk_subset SET v = 'n3' WHERE id = 78"])
    again = _recheck(table)
    assert again["summary"]["diff_rows"] == 1
    assert again["summary"]["mtree"]["leaves_by_keys"] == 1


def test_a_re_check_of_fewer_nodes_keeps_the_keys_the_others_need(pg_cluster: Any) -> None:
    """Marked agreed on all three nodes, a leaf that n1 and n2 change alike is equal on
    those two: their re-check keeps its mark and keys, so re-checks of n1 with n3, and of
    all three, still read it by its keys and find the row."""
    table = _tracked(pg_cluster, "mk_fewer")
    for node in (0, 1):
        execute(pg_cluster.node_dsn(node), ["UPDATE mk_fewer SET v = 'moved on' WHERE id = 77"])
    assert _recheck(table, "n1", "n2")["summary"]["diff_rows"] == 0
    assert [_kept(pg_cluster, table, n) for n in range(3)] == [1, 1, 0]
    for nodes in (("n1", "n3"), ()):
        diff = _recheck(table, *nodes)
        assert diff["summary"]["diff_rows"] == 1
        assert diff["summary"]["mtree"]["leaves_by_keys"] == 1


def test_after_a_truncate_the_node_s_leaves_are_read_whole(pg_cluster: Any) -> None:
    """A TRUNCATE logs no keys: the healed node's leaves lose their mark, and the rows it
    lost are found by reading them."""
    table = _tracked(pg_cluster, "mk_trunc", rows=3000)
    execute(pg_cluster.node_dsn(2), [
        "TRUNCATE mk_trunc",
        "INSERT INTO mk_trunc SELECT g, 'v' || g FROM generate_series(1, 2900) g"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mk_trunc SET v = 'after' WHERE id = 5"])
    diff = _recheck(table)
    assert diff["summary"]["diff_rows"] == 101
    assert diff["summary"]["mtree"]["leaves_by_keys"] == 0
    assert _kept(pg_cluster, table, 2) == 0


def test_splits_keep_the_mark_and_find_the_kept_keys(pg_cluster: Any) -> None:
    """A leaf that grows past twice its size is split; its pieces keep its mark, and the
    kept keys in each piece's bounds are what the re-check probes."""
    table = _tracked(pg_cluster, "mk_split", rows=3000)
    execute(pg_cluster.node_dsn(1), [
        "DELETE FROM mk_split WHERE id BETWEEN 1001 AND 1050",
        "INSERT INTO mk_split SELECT -g, 'grown' FROM generate_series(1, 400) g"])
    updated = run_ace("mtree", "update", CLUSTER, table, "--json")
    assert updated.code == 0, updated.stderr
    assert json.loads(updated.stdout)["leaves_split"] >= 1
    diff = _recheck(table)
    assert diff["summary"]["diff_rows"] == 450
    assert diff["summary"]["mtree"]["leaves_by_keys"] == diff["summary"]["mtree"][
        "leaves_differing"]


def test_reading_kept_keys_probes_only_the_leaves_asked_for(pg_cluster: Any) -> None:
    """The query that reads a group's kept keys is an index range scan per leaf, whatever
    the planner estimates: with 30,000 keys kept in a session that favours sequential
    scans, neither for a few leaves nor for a hundred does it scan every kept key."""
    dsn = pg_cluster.node_dsn(1)
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mk_plan",
        "CREATE TABLE mk_plan (region int, code text, v text, PRIMARY KEY (region, code))",
        "INSERT INTO mk_plan SELECT g % 7, lpad(g::text, 8, '0'), 'v' "
        "FROM generate_series(1, 40000) g",
    ])
    table = "public.mk_plan"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(dsn, ["UPDATE mk_plan SET v = 'n2' WHERE code::int % 4 <> 0"])
    assert run_ace("mtree", "update", CLUSTER, table).code == 0
    assert _kept(pg_cluster, table, 1) == 30000
    key = tree_key(TableName("public", "mk_plan"))
    bounds = query(dsn, f'SELECT l0::text, l1 FROM ace_mtree."blocks_{key}" '
                   "WHERE block_no > 0 ORDER BY block_no")
    with open_job(MtreeRequest("table-diff", CLUSTER, TableName("public", "mk_plan")),
                  load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
    leaves = [KeyRange(i, tuple(bounds[i]), tuple(bounds[i + 1]))
              for i in range(len(bounds) - 1)]
    kept_table = f"keys_{key}"
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f'ANALYZE ace_mtree."{kept_table}"')
            for group in (leaves[5:7], leaves[100:200], [KeyRange(0, None, tuple(bounds[0])),
                                                          *leaves[:3]]):
                cur.execute("SET LOCAL random_page_cost = 40")
                cur.execute(queries.PINNED_PLAN)
                q, params = compare.kept_keys(cast, key, group)
                cur.execute("EXPLAIN (FORMAT JSON) " + cur.mogrify(q, params).decode())
                plan = json.dumps(cur.fetchone()[0])
                assert '"Seq Scan"' not in plan, plan
                cur.execute(q, params)
                found = cur.fetchall()
                assert 0 < len(found) < 30000
                conn.rollback()
                # a group's marks: an index range scan of the leaves' bounds per leaf, which
                # reads the leaves asked for and throws none away
                cur.execute("SET LOCAL random_page_cost = 40")
                cur.execute(queries.PINNED_PLAN)
                q, params = compare.kept_marks(cast, key, group)
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + cur.mogrify(q, params).decode())
                plan = cur.fetchone()[0]
                assert '"Seq Scan"' not in json.dumps(plan), plan
                assert _thrown_away(plan) <= len(group), plan
                conn.rollback()
        # one join, whatever the number of leaves: an arm per leaf cost 70 us each to run
        # and more to plan, most of a re-check of changes in every leaf
        nodes: dict[str, set[int]] = {"keys": set(), "marks": set()}
        with conn.cursor() as cur:
            for group in (leaves[5:7], leaves[100:300]):
                cur.execute(queries.PINNED_PLAN)
                for name, (q, params) in (("keys", compare.kept_keys(cast, key, group)),
                                          ("marks", compare.kept_marks(cast, key, group))):
                    cur.execute("EXPLAIN (FORMAT JSON) " + cur.mogrify(q, params).decode())
                    nodes[name].add(json.dumps(cur.fetchone()[0]).count('"Node Type"'))
                conn.rollback()
        assert max(max(counts) for counts in nodes.values()) <= 6, nodes  # 200 leaves too
    finally:
        conn.close()


def test_a_tree_built_before_keys_were_kept_is_refused_until_built_again(
        pg_cluster: Any) -> None:
    table = _tracked(pg_cluster, "mk_older", rows=500)
    key = tree_key(TableName("public", "mk_older"))
    execute(pg_cluster.node_dsn(1), [f'DROP TABLE ace_mtree."keys_{key}"',
                                     f"ALTER TABLE ace_mtree.\"blocks_{key}\" DROP COLUMN agreed",
                                     f"UPDATE ace_mtree.trees SET format_version = 2 "
                                     f"WHERE tree_key = '{key}'"])
    refused = run_ace("mtree", "table-diff", CLUSTER, table)
    assert refused.code == 2
    assert refused.stderr == (
        "ace: error: Table public.mk_older has no Merkle tree on node n2 (never built, being "
        "built, torn down, lost in a crash, or built by an older version of ACE); build it "
        "with 'ace mtree build'.\n")
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0


def _thrown_away(plan: Any) -> int:
    """Rows a plan read and then dropped (filters, joins, rechecks), over all loops."""
    if isinstance(plan, list):
        return sum(_thrown_away(p) for p in plan)
    if not isinstance(plan, dict):
        return 0
    loops = int(plan.get("Actual Loops", 1))
    dropped = sum(int(plan.get(k, 0)) for k in (
        "Rows Removed by Filter", "Rows Removed by Join Filter", "Rows Removed by Index Recheck"))
    return dropped * loops + sum(_thrown_away(v) for v in plan.values()
                                 if isinstance(v, (dict, list)))
