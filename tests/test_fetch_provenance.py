"""Each differing row carries its own transaction's commit time, however transactions interleave.

A fetch looks a row's commit time and origin up only where its transaction (its
xmin) is not the one of the row before it in key order, and hands that row's
provenance on to the rows after it that share it. So here the rows of n2 are
written by transactions that alternate along the keys, that write runs of
neighbours, and that are cut by keys n2 lacks; table-diff, and table-rerun in
both behaviours (``hostdb`` reads every row's own), must report each row's own.
"""

from __future__ import annotations

from typing import Any

from repair_helpers import Nodes, diff_sections, diff_table, rerun

TABLE = "public.fp_items"
PAIRS = ("n1/n2", "n2/n3")


def _truth(nodes: Nodes, node: str) -> dict[str, str]:
    """Every row's commit time on ``node``, read row by row from its own xmin."""
    rows = nodes.query(node, "SELECT id::text, pg_catalog.to_char(pg_catalog.timezone('UTC', "
                             "pg_catalog.pg_xact_commit_timestamp(xmin)), "
                             "'YYYY-MM-DD HH24:MI:SS.US') || '+00' FROM fp_items")
    return dict(rows)


def _stamps(diffs: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """(node, id) -> (commit time, origin) of every row the file lists."""
    out = {}
    for pair in PAIRS:
        for node, rows in diffs[pair].items():
            for row in rows:
                out[(node, row["id"])] = (row["_ace_commit_ts"], row["_ace_origin"])
    return out


def test_every_row_reports_its_own_transactions_commit_time(pg_cluster: Any) -> None:
    nodes = Nodes(pg_cluster)
    nodes.on_all(["DROP TABLE IF EXISTS fp_items",
                  "CREATE TABLE fp_items (id int PRIMARY KEY, v text)",
                  "INSERT INTO fp_items SELECT g, 'v' || g FROM generate_series(1, 60) g"])
    # each list is one transaction on n2: neighbours from different ones, runs from one,
    # a run cut by keys n2 no longer holds, and rows one transaction each
    nodes.execute("n2", ["UPDATE fp_items SET v = 'odd' WHERE id % 2 = 1 AND id <= 20"])
    nodes.execute("n2", ["UPDATE fp_items SET v = 'even' WHERE id % 2 = 0 AND id <= 20"])
    nodes.execute("n2", ["UPDATE fp_items SET v = 'run' WHERE id BETWEEN 21 AND 40"])
    nodes.execute("n2", ["DELETE FROM fp_items WHERE id IN (25, 26, 33)"])
    nodes.execute("n2", ["UPDATE fp_items SET v = 'odd again' WHERE id IN (1, 5, 9)"])
    for i in range(41, 51):
        nodes.execute("n2", [f"UPDATE fp_items SET v = 'alone' WHERE id = {i}"])
    truth = {n: _truth(nodes, n) for n in ("n1", "n2", "n3")}
    # the load (ids 51-60), four transactions and ten of one row each wrote n2's rows
    assert len(set(truth["n2"].values())) == 1 + 4 + 10

    path, diff = diff_table(TABLE)
    got = _stamps(diff["diffs"])
    assert len(got) == 50 + 47 + 50  # ids 1-50 on n1 and n3, all but three of them on n2
    expected = {(n, k): (truth[n][k], n) for n, k in got if k in truth[n]}
    assert got == expected
    for behavior in ("multiprocessing", "hostdb"):
        again, _summary = rerun(TABLE, path, behavior)
        assert _stamps(diff_sections(again)) == expected, behavior

