"""What folding many changes reads and writes: once per changed key and leaf, not once per
logged version."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, execute, mtree_init
from test_mtree_kept import _recheck, _tracked

from ace_shared.config import load_settings
from ace_shared.mtree import keytypes, leaves
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
