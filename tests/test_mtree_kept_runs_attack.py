"""Runs of differing leaves read over their span, under attack: sequences and keys after
which a re-check could report other rows than a full table-diff of the same nodes.

Each test plans a re-check, lets something happen before its groups run (as on a
fleet, where workers diff the groups later), and checks the rows and counts the
groups report against a full table-diff run afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import CLUSTER, execute, mtree_init, on_every_node, query, run_ace, settled
from test_mtree_kept import _recheck, _tracked
from test_mtree_kept_runs import _key, _planned_then_diffed

from ace_shared.config import load_settings
from ace_shared.mtree.diffjob import plan_mtree_diff
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job
from ace_shared.nodes.ident import TableName


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    assert mtree_init().code == 0


def test_a_merge_inside_a_run_from_the_first_leaf_to_the_last_hides_nothing(
        pg_cluster: Any) -> None:
    """Every leaf differs, the first (no lower bound) to the last (no upper): one run over
    the whole key space. Between the plan and its groups, rows deleted on every node make
    a leaf in the middle shrink and merge into its neighbour: the span no longer holds the
    plan's leaves, and every changed row is still found."""
    table = _tracked(pg_cluster, "mkra_merge", rows=3000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_merge SET v = 'n2' WHERE id % 100 = 7"])
    blocks = f'ace_mtree."blocks_{_key(table)}"'
    leaves_before = int(query(pg_cluster.node_dsn(0), f"SELECT count(*) FROM {blocks}")[0][0])

    def merge() -> None:
        on_every_node(pg_cluster, ["DELETE FROM mkra_merge WHERE id BETWEEN 1400 AND 1599 "
                                   "AND id % 100 NOT IN (7, 50)"])
        assert run_ace("mtree", "update", CLUSTER, table).code == 0
        merged = int(query(pg_cluster.node_dsn(0), f"SELECT count(*) FROM {blocks}")[0][0])
        assert merged < leaves_before
    planned, summary, scans = _planned_then_diffed(pg_cluster, table, between=merge, rows_moved=True)
    assert len(planned.meta["by_keys"]) == planned.meta["mtree"]["leaves_differing"] >= 30
    assert planned.ranges_total == len(planned.meta["by_keys"])
    assert summary["diff_rows"] == 30
    assert max(scans) > 2, scans  # the span was refused: leaf by leaf
    assert _recheck(table)["summary"]["diff_rows"] == 30


def test_one_leaf_in_the_middle_of_a_run_marked_anew_on_one_node_is_read_whole(
        pg_cluster: Any) -> None:
    """Leaves agreed on n1 and n3; n1 changes a row in every leaf. A re-check of n1 and n3
    plans to read the run by its kept keys. Before its groups run, a re-check of n1 and n2
    finds a few leaves in the middle equal there (n2 made the same changes in them) and
    marks them so on n1, deleting n1's kept keys there: those leaves are marked otherwise
    on n1 than on n3, and every row n1 and n3 differ by is still found."""
    table = _tracked(pg_cluster, "mkra_middle", rows=3000, first_nodes=("n1", "n3"))
    execute(pg_cluster.node_dsn(0), ["UPDATE mkra_middle SET v = 'x' WHERE id % 100 = 7"])
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_middle SET v = 'x' WHERE id % 100 = 7",
                                     "UPDATE mkra_middle SET v = 'v' || id "
                                     "WHERE id % 100 = 7 AND id NOT BETWEEN 1000 AND 1500"])

    def other() -> None:
        done = run_ace("mtree", "table-diff", CLUSTER, table, "--nodes=n1,n2")
        assert done.code == 1, (done.stdout, done.stderr)
    planned, summary, scans = _planned_then_diffed(pg_cluster, table, "n1,n3", other)
    assert len(planned.meta["by_keys"]) == 30
    assert summary["diff_rows"] == 30
    assert max(scans) > 2, scans  # the span was refused: leaf by leaf
    assert _recheck(table, "n1", "n3")["summary"]["diff_rows"] == 30


def test_a_truncate_healed_on_one_node_between_plan_and_diff_hides_nothing_in_a_run(
        pg_cluster: Any) -> None:
    """n2 changes a row in every leaf: one run, planned to be read by its kept keys. Between
    the plan and its groups, n2 is truncated and reloaded as it was, and an update hashes
    its leaves again (their marks cleared, their kept keys gone): the run is not read over
    its span from keys n2 no longer keeps, and every changed row is found."""
    table = _tracked(pg_cluster, "mkra_trunc", rows=3000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_trunc SET v = 'n2' WHERE id % 100 = 7"])

    def reload() -> None:
        execute(pg_cluster.node_dsn(1), [
            "CREATE TEMP TABLE saved AS SELECT * FROM mkra_trunc", "TRUNCATE mkra_trunc",
            "INSERT INTO mkra_trunc SELECT * FROM saved"])
        assert run_ace("mtree", "update", CLUSTER, table).code == 0
    planned, summary, _ = _planned_then_diffed(pg_cluster, table, "n1,n2", reload)
    assert len(planned.meta["by_keys"]) == 30
    assert summary["diff_rows"] == 30


def test_a_run_of_an_icu_collated_text_key_is_read_over_its_span(pg_cluster: Any) -> None:
    """A text key sorted by an ICU collation ("a1" < "B1" < "b1" < "_1" differs from "C"):
    a change in every leaf on n2 is read over the run's span in the key's own order, and
    the rows are a full table-diff's."""
    if not query(pg_cluster.node_dsn(0),
                 "SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'"):
        pytest.skip("PostgreSQL is built without ICU")
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mkra_icu",
        'CREATE TABLE mkra_icu (code text COLLATE "en-x-icu" PRIMARY KEY, v text)',
        "INSERT INTO mkra_icu SELECT (ARRAY['a', 'B', 'b', '_', 'Z', 'é', 'e', ' '])"
        "[1 + g % 8] || g, 'v' FROM generate_series(1, 3000) g"])
    table = "public.mkra_icu"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_icu SET v = 'n2' WHERE substr(code, 2)::int "
                                     "% 10 = 5"])
    planned, summary, scans = _planned_then_diffed(pg_cluster, table)
    assert summary["diff_rows"] == 300
    mtree = summary["mtree"]
    assert mtree["leaves_by_keys"] == mtree["leaves_differing"] >= 8
    assert all(n <= 3 for n in scans), scans  # over the span, not leaf by leaf


def test_a_run_of_a_composite_key_of_awkward_text_and_quoted_names_is_read_over_its_span(
        pg_cluster: Any) -> None:
    """Mixed-case quoted column names, key text with commas, quotes, spaces, parentheses and
    backslashes (as a row's text would quote them): changes in every leaf on two nodes, read
    over the run's span, are a full table-diff's rows."""
    on_every_node(pg_cluster, [
        'DROP TABLE IF EXISTS "MkraOdd"',
        'CREATE TABLE "MkraOdd" ("Region" text, "Code, Part" text, "V" text, '
        'PRIMARY KEY ("Region", "Code, Part"))',
        "INSERT INTO \"MkraOdd\" SELECT (ARRAY['a,b', 'a \"b\"', 'a (b)', 'a\\b', ' '])"
        "[1 + g % 5], 'x, \"' || g || '\" )', 'v' FROM generate_series(1, 3000) g"])
    table = 'public."MkraOdd"'
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), ['UPDATE "MkraOdd" SET "V" = \'n2\' WHERE '
                                     "substring(\"Code, Part\" from '[0-9]+')::int % 10 = 5"])
    execute(pg_cluster.node_dsn(2), ['DELETE FROM "MkraOdd" WHERE '
                                     "substring(\"Code, Part\" from '[0-9]+')::int % 89 = 3"])
    planned, summary, scans = _planned_then_diffed(pg_cluster, table)
    assert summary["diff_rows"] == 300 + 34 - 3  # 3 deleted on n3 changed on n2
    mtree = summary["mtree"]
    assert mtree["leaves_by_keys"] == mtree["leaves_differing"] >= 8
    assert all(n <= 3 for n in scans), scans


def test_keys_equal_in_value_printed_otherwise_on_one_node_are_a_full_diff_s_rows(
        pg_cluster: Any) -> None:
    """A numeric key: n2 rewrites a key in every leaf to the same value at another scale
    (1.5 as 1.500), so the kept keys of the run print otherwise on n2 than the rows on n1:
    the re-check reports what a full table-diff reports."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mkra_num",
        "CREATE TABLE mkra_num (id numeric PRIMARY KEY, v text)",
        "INSERT INTO mkra_num SELECT g / 10.0, 'v' FROM generate_series(1, 3000) g"])
    table = "public.mkra_num"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_num SET id = id::numeric(20, 3), v = 'n2' "
                                     "WHERE (id * 10)::int % 100 = 7"])
    _, summary, scans = _planned_then_diffed(pg_cluster, table)
    assert summary["diff_rows"] == 30
    assert summary["mtree"]["leaves_by_keys"] == summary["mtree"]["leaves_differing"] >= 8
    assert all(n <= 3 for n in scans), scans


def test_a_run_of_a_timestamptz_key_on_nodes_in_other_time_zones_is_read_over_its_span(
        pg_cluster: Any) -> None:
    """A timestamptz key, each node's database in another time zone: the run's bounds print
    alike on every node, so it is read over its span, and the rows are a full diff's."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mkra_ts",
        "CREATE TABLE mkra_ts (at timestamptz PRIMARY KEY, v text)",
        "INSERT INTO mkra_ts SELECT '2026-03-29 00:00+00'::timestamptz + g * interval '7 min', "
        "'v' FROM generate_series(1, 3000) g"])
    zones = ("Asia/Kathmandu", "America/St_Johns", "UTC")
    for node, zone in enumerate(zones):
        execute(pg_cluster.node_dsn(node), [
            f"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', "
            f"current_database(), '{zone}'); END $$"])
    try:
        table = "public.mkra_ts"
        assert run_ace("mtree", "build", CLUSTER, table).code == 0
        assert _recheck(table)["summary"]["diff_rows"] == 0
        execute(pg_cluster.node_dsn(1), [
            "UPDATE mkra_ts SET v = 'n2' WHERE extract(epoch FROM at)::bigint / 420 % 100 = 7"])
        _, summary, scans = _planned_then_diffed(pg_cluster, table)
        assert summary["diff_rows"] == 30
        assert summary["mtree"]["leaves_by_keys"] == summary["mtree"]["leaves_differing"] >= 8
        assert all(n <= 3 for n in scans), scans
    finally:
        for node in range(3):
            execute(pg_cluster.node_dsn(node), [
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET timezone', "
                "current_database()); END $$"])


def test_a_fleet_reads_a_run_of_a_composite_awkward_key_over_its_span(
        fleet: Any, pg_cluster: Any) -> None:
    """On a fleet the groups' bounds travel to the workers as JSON: bounds with commas,
    quotes, backslashes and spaces come back as the text the leaves print, and the
    workers' re-check reports a full table-diff's rows."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mkra_fleet",
        'CREATE TABLE mkra_fleet ("Region" text, "Code, Part" text, v text, '
        'PRIMARY KEY ("Region", "Code, Part"))',
        "INSERT INTO mkra_fleet SELECT (ARRAY['a,b', 'a \"b\"', 'a (b)', 'a\\b', ' '])"
        "[1 + g % 5], 'x, \"' || g || '\" )', 'v' FROM generate_series(1, 3000) g"])
    table = "public.mkra_fleet"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_fleet SET v = 'n2' WHERE "
                                     "substring(\"Code, Part\" from '[0-9]+')::int % 7 = 5"])
    on_fleet = fleet.ace("mtree", "table-diff", CLUSTER, table)
    assert on_fleet.returncode == 1, on_fleet.stdout + on_fleet.stderr
    found = re.search(r"(?:Diffs|Diff summary) written to (\S+\.json)", on_fleet.stdout)
    assert found, on_fleet.stdout
    doc = json.loads(Path(found.group(1)).read_text())
    full = run_ace("table-diff", CLUSTER, table).diff()
    assert doc["diffs"] == full["diffs"]
    assert doc["summary"]["diff_rows"] == full["summary"]["diff_rows"] == 428
    mtree = doc["summary"]["mtree"]
    assert mtree["leaves_by_keys"] == mtree["leaves_differing"] >= 8


def _keys_read(cluster: Any, table: str) -> list[int]:
    """Kept keys each node has read so far (by sequential or index scans), once ended
    sessions' counts are in."""
    def read() -> list[int]:
        return [int(query(cluster.node_dsn(n), "SELECT coalesce(t.seq_tup_read, 0) + coalesce(("
                          "SELECT sum(i.idx_tup_read) FROM pg_stat_all_indexes i WHERE "
                          "i.relid = t.relid), 0) FROM pg_stat_all_tables t WHERE t.schemaname "
                          f"= 'ace_mtree' AND t.relname = 'keys_{_key(table)}'")[0][0])
                for n in range(3)]
    return settled(read)


def test_planning_a_re_check_of_fewer_nodes_reads_no_kept_key_of_agreeing_leaves(
        pg_cluster: Any) -> None:
    """Leaves agreed on three nodes keep the keys changed since (6,000 per node here) through
    re-checks of two of them. Planning such a re-check with one differing leaf changes no
    mark and deletes no key: it must not read the kept keys of every agreeing leaf, on
    every node, under the tree lock (counting them to size groups it did, at each
    re-check: up to 50,000 keys per differing leaf)."""
    table = _tracked(pg_cluster, "mkra_count", rows=6000)
    on_every_node(pg_cluster, ["UPDATE mkra_count SET v = v || '!'"])
    assert run_ace("mtree", "update", CLUSTER, table).code == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mkra_count SET v = 'n2' WHERE id = 4321"])
    before = _keys_read(pg_cluster, table)
    settings = load_settings()
    request = MtreeRequest("table-diff", CLUSTER, TableName("public", "mkra_count"),
                           nodes="n1,n2")
    with open_job(request, settings, threads=2) as job:
        planned = plan_mtree_diff(job, settings, "mkra-count", executor="local")
    read = [after - was for after, was in zip(_keys_read(pg_cluster, table), before,
                                              strict=True)]
    assert len(planned.meta["by_keys"]) == 1
    assert all(n <= 200 for n in read), read
