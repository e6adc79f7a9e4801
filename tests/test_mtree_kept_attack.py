"""Kept keys under attack: sequences after which a re-check could report other rows than a
full table-diff of the same nodes."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from diff_helpers import CLUSTER, execute, mtree_init, run_ace
from test_mtree_kept import _recheck, _tracked

from ace_shared.config import load_settings
from ace_shared.diff.job import job_view, merge_job, save_job
from ace_shared.diff.local import run_batches
from ace_shared.mtree.diffjob import by_keys_of, diff_leaf_group, plan_mtree_diff
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job
from ace_shared.nodes.ident import TableName


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    assert mtree_init().code == 0


def test_a_re_check_of_other_nodes_between_plan_and_diff_hides_nothing(
        pg_cluster: Any) -> None:
    """A re-check of n1 and n2 plans to read a differing leaf by its kept keys; before its
    groups run (on a fleet, later, on workers), a re-check of n1 and n3 finds the leaf equal
    there and deletes n1's kept keys. The first re-check must still find the row that
    differs between n1 and n2."""
    table = _tracked(pg_cluster, "mka_between", rows=3000, first_nodes=("n1", "n2"))
    for node in (0, 2):  # n1 and n3 insert a row n2 lacks
        execute(pg_cluster.node_dsn(node), ["INSERT INTO mka_between VALUES (-1, 'new')"])
    settings = load_settings()
    request = MtreeRequest("table-diff", CLUSTER, TableName("public", "mka_between"),
                           nodes="n1,n2")
    with open_job(request, settings, threads=2) as job:
        planned = plan_mtree_diff(job, settings, "mka-between-1", executor="local")
        assert planned.meta["by_keys"], planned.meta  # read by its kept keys
        save_job(planned)
        other = run_ace("mtree", "table-diff", CLUSTER, table, "--nodes=n1,n3")
        assert other.code == 0, (other.stdout, other.stderr)
        view = job_view(planned)
        try:
            results = run_batches(planned, job.sessions, 1, None, run=functools.partial(
                diff_leaf_group, key_bases=job.key_bases, by_keys=by_keys_of(planned)),
                on_first_done=view.spool_ready)
            _, summary = merge_job(planned, results, settings.output_dir, view)
        finally:
            view.close()
    full = run_ace("table-diff", CLUSTER, table, "--nodes=n1,n2")
    assert full.code == 1
    for field in ("diff_rows", "total_rows_checked", "diff_rows_by_pair"):
        assert summary.to_dict()[field] == full.diff()["summary"][field], field
    assert _recheck(table, "n1", "n2")["summary"]["diff_rows"] == 1
