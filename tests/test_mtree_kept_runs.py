"""Runs of neighbouring differing leaves read by their kept keys: one span, one group.

Changes scattered over every leaf make every leaf differ, each with a key or two
kept. Such a run is read over its span (one index range scan of the kept keys
and one of the leaves' bounds per node, where it was a scan per leaf), and its
leaves go in one group sized by their kept keys, not by their rows. When the
leaves in the span are no longer the plan's (a split since), or some are
marked otherwise on some node, the run is read leaf by leaf as before. Either
way the diff is a full table-diff's.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, execute, mtree_init, on_every_node, query, run_ace, settled
from test_mtree_kept import _recheck, _thrown_away, _tracked

from ace_shared.config import load_settings
from ace_shared.diff import queries
from ace_shared.diff.job import DiffJob, job_view, merge_job, save_job
from ace_shared.diff.local import run_batches
from ace_shared.diff.ranges import KeyRange
from ace_shared.mtree import compare, keytypes
from ace_shared.mtree.diffjob import (
    by_keys_of,
    diff_leaf_group,
    kept_per_leaf,
    keyed_group_leaves,
    leaves_per_query,
    plan_mtree_diff,
)
from ace_shared.mtree.objects import tree_key
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job, table_shape
from ace_shared.nodes.ident import TableName


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    assert mtree_init().code == 0


def _key(table: str) -> str:
    schema, name = table.split(".")
    return tree_key(TableName(schema, name.strip('"')))


def _kept_scans(cluster: Any, table: str) -> list[int]:
    """Scans of each node's kept keys' index so far, once ended sessions' counts are in."""
    return settled(lambda: [int(query(
        cluster.node_dsn(n), "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_all_indexes "
        f"WHERE schemaname = 'ace_mtree' AND relname = 'keys_{_key(table)}'")[0][0])
        for n in range(3)])


def _planned_then_diffed(cluster: Any, table: str, nodes: str = "all",
                         between: Callable[[], None] = lambda: None, rows_moved: bool = False,
                         ) -> tuple[DiffJob, dict[str, Any], list[int]]:
    """Plan a re-check of ``nodes``, run ``between``, then diff its groups in sessions of
    their own (as a fleet's workers do); the plan, the summary and how many scans of the
    kept keys' index each node's groups made. The rows reported and the counts are
    checked against a full table-diff of the same nodes (``rows_moved``: ``between`` added
    or deleted rows alike on every node, which the rows checked, counted by the plan, do
    not follow)."""
    settings = load_settings()
    schema, name = table.split(".")
    name = name.strip('"')
    request = MtreeRequest("table-diff", CLUSTER, TableName(schema, name), nodes=nodes)
    with open_job(request, settings, threads=2) as job:
        planned = plan_mtree_diff(job, settings, f"mkr-{name.lower()}", executor="local")
        key_bases = job.key_bases
    save_job(planned)
    between()
    before = _kept_scans(cluster, table)
    with open_job(request, settings, threads=2) as job:
        view = job_view(planned)
        try:
            results = run_batches(planned, job.sessions, 1, None, run=functools.partial(
                diff_leaf_group, key_bases=key_bases, by_keys=by_keys_of(planned)),
                on_first_done=view.spool_ready)
            path, summary = merge_job(planned, results, settings.output_dir, view)
        finally:
            view.close()
    scans = [after - was for after, was in zip(_kept_scans(cluster, table), before, strict=True)]
    args = [] if nodes == "all" else [f"--nodes={nodes}"]
    full = run_ace("table-diff", CLUSTER, table, *args).diff()
    got = summary.to_dict()
    assert json.loads(path.read_text())["diffs"] == full["diffs"]
    for field in ("diff_rows", "diff_rows_by_pair",
                  *(() if rows_moved else ("total_rows_checked",))):
        assert got[field] == full["summary"][field], field
    return planned, got, scans


def test_a_change_in_each_of_600_leaves_is_one_group_read_over_its_span(
        pg_cluster: Any) -> None:
    """One changed row in each of 600 leaves: one group (two, of 500 leaves each, before), and
    each node scans its kept keys once for all of them (once per leaf before)."""
    table = _tracked(pg_cluster, "mkr_every", rows=60000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mkr_every SET v = 'n2' WHERE id % 100 = 7"])
    planned, summary, scans = _planned_then_diffed(pg_cluster, table)
    assert len(planned.meta["by_keys"]) == 600
    assert len(planned.batches) == 1
    assert summary["diff_rows"] == 600
    assert all(0 < n <= 2 for n in scans), scans


def test_groups_of_leaves_read_by_keys_are_sized_by_their_keys() -> None:
    """A group holds about as many kept keys as a group of whole leaves holds rows: one
    change per leaf puts every leaf in one group; a hundred per leaf, as many leaves as whole
    ones (each group's keys are held in memory while its rows are fetched)."""
    assert kept_per_leaf({"n1": 0, "n2": 600, "n3": 0}, 600) == 1
    assert leaves_per_query(kept_per_leaf({"n1": 0, "n2": 600, "n3": 0}, 600)) >= 600
    assert kept_per_leaf({"n1": 30000, "n2": 30000}, 600) == 100
    assert leaves_per_query(100) == leaves_per_query(kept_per_leaf({"n1": 60000}, 600))
    assert kept_per_leaf({}, 0) == 1

    def groups(leaves: int, per_leaf: int, threads: int) -> int:
        return math.ceil(leaves / keyed_group_leaves(leaves, per_leaf, threads))
    # a group a thread, each a fetch's worth of keys at least
    assert groups(10_000, 1, 2) == 2
    assert groups(600, 1, 2) == 1  # two groups of 300 keys would take a fetch each
    assert groups(100, 100, 2) == 2
    assert groups(100, 100, 64) == 2  # 5,000 keys a group at least
    assert groups(10_000, 100, 1) == 10_000 // leaves_per_query(100)  # memory bounds them


def test_a_split_in_the_run_between_plan_and_diff_is_read_leaf_by_leaf(
        pg_cluster: Any) -> None:
    """Between the plan and its groups, rows added on every node split a leaf in the middle
    of the run: the leaves in the span are no longer the plan's, so the run is read range
    by range (the split's pieces keep their mark), and every changed row is still found."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mkr_split",
        "CREATE TABLE mkr_split (id bigint PRIMARY KEY, v text)",
        "INSERT INTO mkr_split SELECT g * 10, 'v' || g FROM generate_series(1, 4000) g"])
    table = "public.mkr_split"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mkr_split SET v = 'n2' WHERE id % 1000 = 70"])

    def split() -> None:
        on_every_node(pg_cluster, [  # 900 rows between two keys of one leaf: it splits
            "INSERT INTO mkr_split SELECT 20000 + g, 'new' FROM generate_series(1, 999) g "
            "WHERE g % 10 <> 0"])
        assert run_ace("mtree", "update", CLUSTER, table).code == 0
    planned, summary, scans = _planned_then_diffed(pg_cluster, table, between=split,
                                                   rows_moved=True)
    assert len(planned.meta["by_keys"]) == 40
    assert summary["diff_rows"] == 40
    assert max(scans) > 2, scans  # leaf by leaf
    assert _recheck(table)["summary"]["diff_rows"] == 40


def test_a_run_marked_anew_on_one_node_between_plan_and_diff_hides_nothing(
        pg_cluster: Any) -> None:
    """n1 and n3 change a row in every leaf, which n2 lacks. A re-check of every node plans
    to read the run by its kept keys; before its groups run, a re-check of n1 and n3 finds
    every leaf equal there, marks them so and deletes their kept keys. The run's leaves are
    no longer marked alike: they are read whole, and every row is found."""
    table = _tracked(pg_cluster, "mkr_marked", rows=3000)
    for node in (0, 2):
        execute(pg_cluster.node_dsn(node), ["UPDATE mkr_marked SET v = 'x' WHERE id % 100 = 7"])

    def other() -> None:
        done = run_ace("mtree", "table-diff", CLUSTER, table, "--nodes=n1,n3")
        assert done.code == 0, (done.stdout, done.stderr)
    planned, summary, _ = _planned_then_diffed(pg_cluster, table, between=other)
    assert len(planned.meta["by_keys"]) == 30
    assert summary["diff_rows"] == 30
    assert _recheck(table)["summary"]["diff_rows"] == 30


def test_a_run_of_a_composite_collated_key_is_read_over_its_span(pg_cluster: Any) -> None:
    """A two-column key whose text sorts by "C", a change in every leaf on two nodes and rows
    added before the first key: the span's bounds are compared in the key's own order."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mkr_pair",
        'CREATE TABLE mkr_pair (region int, code text COLLATE "C", v text, '
        "PRIMARY KEY (region, code))",
        "INSERT INTO mkr_pair SELECT g % 3, chr(65 + g % 50) || g, 'v' "
        "FROM generate_series(1, 3000) g"])
    table = "public.mkr_pair"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), [  # rows all over the key's order (g % 50 varies)
        "UPDATE mkr_pair SET v = 'n2' WHERE substr(code, 2)::int % 101 = 7",
        "INSERT INTO mkr_pair VALUES (-1, 'A', 'x')"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mkr_pair SET v = 'n3' "
                                     "WHERE substr(code, 2)::int % 103 = 41"])
    _, summary, scans = _planned_then_diffed(pg_cluster, table)
    assert summary["diff_rows"] == 30 + 1 + 29
    assert summary["mtree"]["leaves_by_keys"] == summary["mtree"]["leaves_differing"] >= 8
    assert all(n <= 3 for n in scans), scans


def test_a_run_s_span_is_one_index_range_scan_whatever_the_planner_estimates(
        pg_cluster: Any) -> None:
    """The queries reading a run's kept keys and leaves scan each index once over the span,
    in a session that favours sequential scans, and throw nothing away."""
    table = _tracked(pg_cluster, "mkr_plan", rows=40000)
    dsn = pg_cluster.node_dsn(1)
    execute(dsn, ["UPDATE mkr_plan SET v = 'n2' WHERE id % 4 <> 0"])
    assert run_ace("mtree", "update", CLUSTER, table).code == 0
    key = tree_key(TableName("public", "mkr_plan"))
    bounds = [r[0] for r in query(dsn, f'SELECT l0::text FROM ace_mtree."blocks_{key}" '
                                        "WHERE block_no > 0 ORDER BY block_no")]
    with open_job(MtreeRequest("table-diff", CLUSTER, TableName("public", "mkr_plan")),
                  load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
    run = [KeyRange(i, (bounds[i],), (bounds[i + 1],)) for i in range(100, 200)]
    first = [KeyRange(0, None, (bounds[0],)), *[KeyRange(i + 1, (bounds[i],), (bounds[i + 1],))
                                                 for i in range(10)]]
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f'ANALYZE ace_mtree."keys_{key}", ace_mtree."blocks_{key}"')
            conn.commit()
            for leaves in (run, first):
                got = {}
                for name, (q, params) in (("keys", compare.kept_in_span(cast, key, leaves)),
                                          ("leaves", compare.leaves_in_span(cast, key, leaves)),
                                          ("by leaf", compare.kept_keys(cast, key, leaves))):
                    cur.execute("SET LOCAL random_page_cost = 40")
                    cur.execute(queries.PINNED_PLAN)
                    cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + cur.mogrify(q, params).decode())
                    plan = cur.fetchone()[0]
                    assert '"Seq Scan"' not in json.dumps(plan), (name, plan)
                    if name != "by leaf":
                        assert _thrown_away(plan) == 0, (name, plan)
                        assert _scans(plan) == [1] * (1 + (name == "leaves" and leaves is first)), (
                            name, plan)
                    cur.execute(q, params)
                    got[name] = cur.fetchall()
                    conn.rollback()
                # the same keys as leaf by leaf: three in four of the run's rows changed
                assert sorted(got["keys"]) == sorted(got["by leaf"])
                assert len(got["keys"]) == sum(
                    1 for i in range(1, 100 * len(leaves) + 1) if i % 4) or leaves is first
                assert compare.marks_of_run(leaves, got["leaves"]) is not None
    finally:
        conn.close()


def _scans(plan: Any) -> list[int]:
    """The loops of each scan of a table in ``plan`` (a bitmap scan is one)."""
    if isinstance(plan, list):
        return [n for p in plan for n in _scans(p)]
    if not isinstance(plan, dict):
        return []
    own = [int(plan["Actual Loops"])] if "Relation Name" in plan else []
    return own + [n for v in plan.values() if isinstance(v, (dict, list)) for n in _scans(v)]


def test_marks_of_a_run_stand_only_for_exactly_its_leaves() -> None:
    """Each range's mark from the leaves found in the span; None when a leaf is missing, one
    more was found (a split), or two were found at one bound."""
    run = [KeyRange(0, None, ("10",)), KeyRange(1, ("10",), ("20",)), KeyRange(2, ("20",), None)]
    found = [(None, "{5,7}"), ("10", "{5,7}"), ("20", "{}")]
    assert compare.marks_of_run(run, found) == {0: "{5,7}", 1: "{5,7}", 2: "{}"}
    assert compare.marks_of_run(run, found[:2]) is None
    assert compare.marks_of_run(run, [*found, ("15", "{5,7}")]) is None
    assert compare.marks_of_run(run, [*found, ("10", "{5,7}")]) is None
    assert compare.marks_of_run(run, [(None, "{1}"), ("10.0", "{1}"), ("20", "{1}")]) is None
    assert [len(r) for r in compare.leaf_runs([*run[:2], KeyRange(5, ("30",), ("40",))])] == [2, 1]


def test_many_scattered_leaves_are_sized_by_a_sample_of_their_kept_keys(
        pg_cluster: Any) -> None:
    """One changed row in every other leaf of 1,100: 550 leaves apart from each other are read
    by their keys. Counting their kept keys to size the groups scans a sample of 275 of them
    (a scan per leaf for all of them would cost a tenth of reading them), and the count
    per leaf is right: one group, the rows a full diff finds."""
    table = _tracked(pg_cluster, "mkr_sample", rows=110_000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mkr_sample SET v = 'n2' WHERE id % 200 = 7"])
    planned, summary, _ = _planned_then_diffed(pg_cluster, table)
    assert len(planned.meta["by_keys"]) == 550 and len(planned.batches) == 1
    assert summary["diff_rows"] == 550
    ranges = [r for batch in planned.batches for r in batch]
    key = tree_key(TableName("public", "mkr_sample"))
    with open_job(MtreeRequest("table-diff", CLUSTER, TableName("public", "mkr_sample")),
                  load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
        counts, counted = compare.kept_counts(job, cast, key, ranges, 10**9)
    assert counted == 275 and counts["n2"] == 275 and counts["n1"] == counts["n3"] == 0
    assert kept_per_leaf(counts, counted) == 1
