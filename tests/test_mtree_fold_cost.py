"""What folding many changes and planning their re-check read and write: once per changed
key and per leaf, not once per logged version or per step of the plan."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, execute, mtree_init, query, settled
from test_mtree_kept import _recheck, _tracked

from ace_shared.config import load_settings
from ace_shared.mtree import kept, keytypes, leaves
from ace_shared.mtree.compare import Walked, delete_kept_outside
from ace_shared.mtree.diffjob import plan_mtree_diff
from ace_shared.mtree.objects import tree_key
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job, table_shape
from ace_shared.nodes.ident import TableName


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    assert mtree_init().code == 0


def test_folding_updates_probes_each_key_once_and_adds_no_index_entries(pg_cluster: Any) -> None:
    """An update logs two versions of its row: the fold finds the key's leaf once (it
    probed the leaves' bounds per version), and rewrites every leaf it touches in place,
    without a new entry in the leaves' indexes (pages were full: nearly every leaf's new
    version went to another page, with an entry in each index)."""
    table = _tracked(pg_cluster, "mfc_fold", rows=20000)  # 200 leaves: several pages of them
    dsn = pg_cluster.node_dsn(1)
    execute(dsn, ["UPDATE mfc_fold SET v = 'changed' WHERE id % 10 = 3"])  # 2,000 keys
    key = tree_key(TableName("public", "mfc_fold"))
    with open_job(MtreeRequest("update", CLUSTER, TableName("public", "mfc_fold")),
                  load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            drained = leaves.drain(cur, cast, key)
            cur.execute(
                "SELECT pg_catalog.pg_stat_get_xact_numscans(i.indexrelid) FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                "WHERE i.indrelid = %s::regclass AND a.attname = 'l0'",
                (f'ace_mtree."blocks_{key}"',))
            probes = cur.fetchone()[0]
            cur.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_all_tables "
                        "WHERE schemaname = 'ace_mtree' AND relname = %s", (f"blocks_{key}",))
            updated, in_place = cur.fetchone()
            conn.rollback()
    finally:
        conn.close()
    assert drained.rows == 4000
    assert len(drained.touched) == 200
    assert probes == 2000
    # most in place (9 of 200 when the pages were full); a leaf that grew with its first
    # mark may have left its page, full of others, for another one
    assert updated == 200 and in_place >= 150, (updated, in_place)
    assert _recheck(table, "n1", "n2")["summary"]["diff_rows"] == 2000


def _blocks_read(dsn: str, key: str) -> int:
    """Index entries of the leaves' table read so far (by backends that have ended)."""
    rows = query(dsn, "SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_all_indexes "
                      f"WHERE schemaname = 'ace_mtree' AND relname = 'blocks_{key}'")
    return int(rows[0][0])


def _settled(dsn: str, key: str) -> int:
    """:func:`_blocks_read`, once the ended backends' statistics are in."""
    return settled(lambda: _blocks_read(dsn, key))


def test_planning_a_change_in_every_leaf_reads_each_leaf_once(pg_cluster: Any) -> None:
    """Changes in every leaf: the plan walks to every leaf, and takes each one's mark and
    bounds from that read. It read every leaf three times more after the walk: its mark
    (to choose how to read it), and its bounds and the next leaf's (to cut its range)."""
    table = _tracked(pg_cluster, "mfc_plan", rows=4000)  # 40 leaves
    name = TableName("public", "mfc_plan")
    key = tree_key(name)
    execute(pg_cluster.node_dsn(1), ["UPDATE mfc_plan SET v = 'changed' WHERE id % 100 = 7"])
    dsn = pg_cluster.node_dsn(0)
    before = _settled(dsn, key)
    settings = load_settings()
    with open_job(MtreeRequest("table-diff", CLUSTER, name, nodes="n1,n2"), settings) as job:
        planned = plan_mtree_diff(job, settings, "mfc-plan", executor="local")
    assert len(planned.meta["by_keys"]) == 40, planned.meta
    read = _settled(dsn, key) - before
    # the walk: each leaf once, and the inner nodes above them; not four times each
    assert 40 <= read < 80, read
    assert _recheck(table, "n1", "n2")["summary"]["diff_rows"] == 40


def test_a_leaf_s_upper_bound_comes_from_the_walk_only_where_no_leaf_can_lie_between() -> None:
    """The walk reads every child of the parents it reads: the next leaf it knows is the
    next leaf of the tree under the same or the next parent, and may not be beyond (a
    wrong upper bound would leave rows of the leaf unread)."""
    walked = Walked(differing=[], known=[4, 8, 20, 200, 212], first={}, most={}, held=0,
                    total_rows=0, lowers={4: ("40",), 8: ("80",), 20: ("200",),
                                          200: ("2000",), 212: ("2120",)})
    # 4 and 8 share parent 0, 20 is under parent 1; 200 is under parent 12, which the walk
    # read with parent 13 (212) but not with parent 1: leaves may lie between 20 and 200
    assert walked.spans == {4: (("40",), ("80",)), 8: (("80",), ("200",)),
                              200: (("2000",), ("2120",))}


def test_settling_the_marks_of_changes_in_most_leaves_visits_only_the_agreeing_leaves_keys(
        pg_cluster: Any) -> None:
    """A re-check of the nodes every leaf last agreed on, where all leaves but one differ:
    the kept keys of that one leaf go, and no other kept key is visited (each kept key was
    probed for its leaf: 2,000 probes for the 3 keys that go)."""
    _tracked(pg_cluster, "mfc_settle", rows=500)
    name = TableName("public", "mfc_settle")
    key = tree_key(name)
    blocks, kept_table = f'ace_mtree."blocks_{key}"', f'ace_mtree."keys_{key}"'
    dsn = pg_cluster.node_dsn(0)
    all_three = query(dsn, f"SELECT agreed FROM {blocks} WHERE block_no = 0")[0][0]
    execute(dsn, [  # 20,000 leaves of 100 keys, all agreed on the three nodes; 2,000 keys kept
        f"DELETE FROM {blocks}",
        f"INSERT INTO {blocks} SELECT g * 4, CASE WHEN g > 0 THEN g * 100 END, 100, g, "
        f"'{{{','.join(str(d) for d in all_three)}}}' FROM generate_series(0, 20000) g",
        f"INSERT INTO {kept_table} SELECT g * 37 FROM generate_series(1, 2000) g",
        f"ANALYZE {blocks}, {kept_table}"])
    with open_job(MtreeRequest("table-diff", CLUSTER, name), load_settings()) as job:
        shape = table_shape(job, check_kind=False)
        cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
        three = kept.mark_for(job.sessions.on_all(kept.identity))
    assert three == list(all_three)
    differing = [g * 4 for g in range(20001) if g != 2]  # leaf 8 holds keys 200 to 299
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            spans = leaves.read_spans(cur, cast, key, differing)
            outside = delete_kept_outside(cast, key, [spans[b] for b in differing])
            before = _visits(cur, key)
            kept.mark_agreed(cur, cast, key, differing, three, outside)
            visited = {name: (read - before.get(name, (0, 0))[0], gone)
                       for name, (read, gone) in _visits(cur, key).items()}
            cur.execute(f"SELECT count(*) FROM {kept_table} WHERE k0 BETWEEN 200 AND 299")
            left = cur.fetchone()[0]
            conn.rollback()
    finally:
        conn.close()
    assert left == 0
    assert visited[f"keys_{key}"][1] == 3, visited  # 222, 259 and 296
    assert visited[f"keys_{key}"][0] < 20, visited
    assert visited.get(f"blocks_{key}", (0, 0))[0] < 100, visited


def _visits(cur: Any, key: str) -> dict[str, tuple[int, int]]:
    """Rows of the tree's leaves and kept keys read and deleted so far in this transaction."""
    cur.execute("SELECT relname, coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0), "
                "n_tup_del FROM pg_stat_xact_all_tables "
                "WHERE schemaname = 'ace_mtree' AND relname IN (%s, %s)",
                (f"blocks_{key}", f"keys_{key}"))
    return {name: (int(read), int(gone)) for name, read, gone in cur.fetchall()}
