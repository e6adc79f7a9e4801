"""Kept keys under attack: sequences after which a re-check could report other rows than a
full table-diff of the same nodes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, execute, mtree_init, on_every_node, query, run_ace
from test_mtree_kept import _recheck, _tracked

from ace_shared.config import load_settings
from ace_shared.diff.job import job_view, merge_job, save_job
from ace_shared.diff.local import run_batches
from ace_shared.mtree import kept, keytypes
from ace_shared.mtree.diffjob import by_keys_of, diff_leaf_group, plan_mtree_diff
from ace_shared.mtree.objects import tree_key
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job, table_shape
from ace_shared.nodes.ident import TableName


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    assert mtree_init().code == 0


def _plan_then_diff(table: str, nodes: str, between: Callable[[], None]) -> dict[str, Any]:
    """Plan a re-check of ``nodes``, run ``between``, then diff its groups (as a fleet's
    workers do, after the plan); its summary, checked against a full table-diff."""
    settings = load_settings()
    schema, name = table.split(".")
    request = MtreeRequest("table-diff", CLUSTER, TableName(schema, name), nodes=nodes)
    with open_job(request, settings, threads=2) as job:
        planned = plan_mtree_diff(job, settings, f"mka-{name}", executor="local")
        assert planned.meta["by_keys"], planned.meta  # read by its kept keys
        save_job(planned)
        between()
        view = job_view(planned)
        try:
            results = run_batches(planned, job.sessions, 1, None, run=functools.partial(
                diff_leaf_group, key_bases=job.key_bases, by_keys=by_keys_of(planned)),
                on_first_done=view.spool_ready)
            _, summary = merge_job(planned, results, settings.output_dir, view)
        finally:
            view.close()
    full = run_ace("table-diff", CLUSTER, table, f"--nodes={nodes}")
    got = summary.to_dict()
    for field in ("diff_rows", "total_rows_checked", "diff_rows_by_pair"):
        assert got[field] == full.diff()["summary"][field], field
    return got


def test_a_re_check_of_other_nodes_between_plan_and_diff_hides_nothing(
        pg_cluster: Any) -> None:
    """A re-check of n1 and n2 plans to read a differing leaf by its kept keys; before its
    groups run (on a fleet, later, on workers), a re-check of n1 and n3 finds the leaf equal
    there and deletes n1's kept keys. The first re-check must still find the row that
    differs between n1 and n2."""
    table = _tracked(pg_cluster, "mka_between", rows=3000, first_nodes=("n1", "n2"))
    for node in (0, 2):  # n1 and n3 insert a row n2 lacks
        execute(pg_cluster.node_dsn(node), ["INSERT INTO mka_between VALUES (-1, 'new')"])

    def other() -> None:
        done = run_ace("mtree", "table-diff", CLUSTER, table, "--nodes=n1,n3")
        assert done.code == 0, (done.stdout, done.stderr)
    assert _plan_then_diff(table, "n1,n2", other)["diff_rows"] == 1
    assert _recheck(table, "n1", "n2")["summary"]["diff_rows"] == 1


def test_a_truncate_healed_between_plan_and_diff_hides_nothing(pg_cluster: Any) -> None:
    """n2 changes a row (kept on n2); between the plan and its groups, n2 is truncated and
    reloaded as it was, and an update hashes its leaves again, deleting its kept keys: the
    groups read the leaf whole and still find the row."""
    table = _tracked(pg_cluster, "mka_trunc", rows=3000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mka_trunc SET v = 'n2' WHERE id = 150"])

    def reload() -> None:
        execute(pg_cluster.node_dsn(1), [
            "CREATE TEMP TABLE saved AS SELECT * FROM mka_trunc", "TRUNCATE mka_trunc",
            "INSERT INTO mka_trunc SELECT * FROM saved"])
        assert run_ace("mtree", "update", CLUSTER, table).code == 0
    assert _plan_then_diff(table, "n1,n2", reload)["diff_rows"] == 1


def test_a_re_check_of_fewer_nodes_than_the_leaves_agreed_on_visits_no_leaf(
        pg_cluster: Any) -> None:
    """Every leaf marked agreed on three nodes, a re-check of two of them changes no mark and
    deletes no kept key: settling its marks must not visit every leaf, nor every kept key
    (it did, at each re-check: 35 ms per node at 150,000 leaves, growing with them)."""
    _tracked(pg_cluster, "mka_fewer", rows=500)
    key = tree_key(TableName("public", "mka_fewer"))
    blocks, kept_table = f'ace_mtree."blocks_{key}"', f'ace_mtree."keys_{key}"'
    dsn = pg_cluster.node_dsn(0)
    all_three = query(dsn, f"SELECT agreed FROM {blocks} WHERE block_no = 0")[0][0]
    assert len(all_three) == 3
    execute(dsn, [  # 20,000 leaves, all agreed on the three nodes; 2,000 keys kept
        f"DELETE FROM {blocks}",
        f"INSERT INTO {blocks} SELECT g * 4, CASE WHEN g > 0 THEN g * 100 END, 100, g, "
        f"'{{{','.join(str(d) for d in all_three)}}}' FROM generate_series(0, 20000) g",
        f"INSERT INTO {kept_table} SELECT g * 37 FROM generate_series(1, 2000) g",
        f"ANALYZE {blocks}, {kept_table}"])
    with open_job(MtreeRequest("table-diff", CLUSTER, TableName("public", "mka_fewer"),
                               nodes="n1,n2"), load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
        two = kept.mark_for(job.sessions.on_all(kept.identity))
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            kept.mark_agreed(cur, cast, key, [8], two)
            cur.execute("SELECT relname, coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0), "
                        "n_tup_upd + n_tup_del FROM pg_stat_xact_all_tables "
                        "WHERE schemaname = 'ace_mtree' AND relname IN (%s, %s)",
                        (f"blocks_{key}", f"keys_{key}"))
            visited = {name: (read, written) for name, read, written in cur.fetchall()}
            conn.rollback()
    finally:
        conn.close()
    assert visited.get(f"blocks_{key}", (0, 0))[1] == 0
    assert visited.get(f"blocks_{key}", (0, 0))[0] < 100, visited
    assert visited.get(f"keys_{key}", (0, 0)) == (0, 0), visited


def test_a_key_moved_to_another_leaf_and_replica_writes_are_found_by_their_keys(
        pg_cluster: Any) -> None:
    """A key updated on one node moves its row from one agreed leaf to another: both keys are
    kept, so both leaves are read by their keys and both rows found; so are writes applied
    as replication applies them (``session_replication_role = replica``)."""
    table = _tracked(pg_cluster, "mka_moved", rows=3000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mka_moved SET id = 2950 + 1000 WHERE id = 150"])
    execute(pg_cluster.node_dsn(2), ["SET session_replication_role = replica",
                                     "UPDATE mka_moved SET v = 'applied' WHERE id = 1234",
                                     "DELETE FROM mka_moved WHERE id = 2345"])
    diff = _recheck(table)
    assert diff["summary"]["diff_rows"] == 4
    assert diff["summary"]["mtree"]["leaves_by_keys"] == diff["summary"]["mtree"][
        "leaves_differing"] == 4


def test_a_re_check_that_marked_one_node_only_reads_the_leaf_whole_after(
        pg_cluster: Any) -> None:
    """A re-check of n1 and n3 that settled n1's marks and failed before n3's leaves n1 marked
    for n1 and n3 (its kept key gone) and n3 unmarked: re-checks of n1 with n2, and of n1
    with n3, read the leaf whole and find the row n2 lacks."""
    table = _tracked(pg_cluster, "mka_half", rows=3000, first_nodes=("n1", "n2"))
    for node in (0, 2):
        execute(pg_cluster.node_dsn(node), ["INSERT INTO mka_half VALUES (-1, 'new')"])
    assert run_ace("mtree", "update", CLUSTER, table).code == 0
    key = tree_key(TableName("public", "mka_half"))
    with open_job(MtreeRequest("table-diff", CLUSTER, TableName("public", "mka_half"),
                               nodes="n1,n3"), load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
        mark = kept.mark_for(job.sessions.on_all(kept.identity))
    conn = psycopg2.connect(pg_cluster.node_dsn(0))
    try:
        with conn.cursor() as cur:
            kept.mark_agreed(cur, cast, key, [], mark)
        conn.commit()
    finally:
        conn.close()
    for nodes in (("n1", "n2"), ("n1", "n3"), ("n1", "n2"), ()):
        diff = _recheck(table, *nodes)
        assert diff["summary"]["diff_rows"] == (0 if nodes == ("n1", "n3") else 1), nodes


def test_a_composite_key_with_a_collation_is_read_by_its_keys(pg_cluster: Any) -> None:
    """A two-column key whose text sorts by "C": the marks and kept keys of a leaf are found
    by its bounds in the key's own order, and the changed rows are found."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mka_pair",
        'CREATE TABLE mka_pair (region int, code text COLLATE "C", v text, '
        "PRIMARY KEY (region, code))",
        "INSERT INTO mka_pair SELECT g % 3, chr(65 + g % 50) || g, 'v' "
        "FROM generate_series(1, 3000) g"])
    table = "public.mka_pair"
    assert run_ace("mtree", "build", CLUSTER, table).code == 0
    assert _recheck(table)["summary"]["diff_rows"] == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mka_pair SET v = 'n2' WHERE code IN ('a32', 'Z25')",
                                     "INSERT INTO mka_pair VALUES (1, 'b', 'new'), (-1, 'A', 'x')"])
    diff = _recheck(table)
    assert diff["summary"]["diff_rows"] == 4
    mtree = diff["summary"]["mtree"]
    assert mtree["leaves_by_keys"] == mtree["leaves_differing"] > 0
