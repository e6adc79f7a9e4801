"""A table-diff's summary and its task's result: the keys a user sees, in the order they see them."""

from __future__ import annotations

import json
from typing import Any

from ace_shared.diff.summary import DiffSummary, DiffTaskResult
from ace_shared.repsetdiff.tables import DIFFERS, IDENTICAL, outcome_of


def _written(**changes: Any) -> dict[str, Any]:
    """A summary as a merge writes it into a diff file."""
    summary: dict[str, Any] = {
        "task_id": "td_20240315_123456_abcdef", "cluster_name": "demo", "database": "demo",
        "schema_name": "public", "table_name": "items", "table": "public.items",
        "nodes": ["n1", "n2"], "primary_key": ["id"],
        "columns": [{"name": "id", "type": "integer"}, {"name": "note", "type": "text"}],
        "table_filter": None, "block_rows": 10000, "batch_size": 1, "max_cpu_ratio": 0.6,
        "executor": "local", "start_time": "2024-03-15T12:34:56+00:00",
        "end_time": "2024-03-15T12:34:57+00:00", "time_taken": 1.25,
        "total_rows_checked": 200, "ranges_total": 4, "ranges_checked": 4, "diff_rows": 3,
        "diff_rows_by_pair": {"n1/n2": 3}, "mismatch": True, "max_allowed_diffs": 1000,
        "diff_partial": False, "against_origin": None, "until": None,
        "diff_file": "/out/diffs/d.json",
    }
    summary.update(changes)
    return summary


def test_a_summary_read_back_is_written_with_the_same_keys_in_the_same_order() -> None:
    written = _written()
    again = DiffSummary.from_dict(written).to_dict()
    assert json.dumps(again) == json.dumps(written)


def test_a_reruns_summary_keeps_its_account_between_the_diffs_fields_and_its_files() -> None:
    written = _written(
        partial_reason=None, commit_ts_note="n2 keeps no commit timestamps.",
        mtree={"leaves_differing": 1, "leaves_read": 2}, report_file=None)
    del written["partial_reason"], written["report_file"], written["diff_file"]
    written.update({"operation": "table-rerun", "behavior": "hostdb", "rerun_of": "/a.json",
                    "previous_diff_rows": 5, "previous_diff_partial": False, "resolved": 2,
                    "remaining": 3, "diff_file": "/out/diffs/b.json",
                    "report_file": "/out/diffs/b.html"})
    summary = DiffSummary.from_dict(written)
    assert summary.rerun is not None and summary.rerun.remaining == 3
    assert json.dumps(summary.to_dict()) == json.dumps(written)


def test_keys_a_summary_does_not_know_are_kept_where_they_were() -> None:
    written = _written()
    written.pop("diff_file")
    written.update({"operation": "something-else", "diff_file": "/d.json"})
    assert list(DiffSummary.from_dict(written).to_dict()) == list(written)


def test_mismatch_follows_the_differing_rows() -> None:
    assert DiffSummary.from_dict(_written(diff_rows=3)).mismatch
    same = DiffSummary.from_dict(_written(diff_rows=0, diff_rows_by_pair={"n1/n2": 0}))
    assert not same.mismatch and same.to_dict()["mismatch"] is False


def test_a_diff_tasks_result_names_the_file_and_counts_from_its_summary() -> None:
    summary = DiffSummary.from_dict(_written())
    stored = DiffTaskResult(summary).to_dict()
    assert list(stored) == ["diff_file", "total_rows", "mismatched_rows", "summary"]
    assert (stored["diff_file"], stored["total_rows"], stored["mismatched_rows"]) == (
        "/out/diffs/d.json", 200, 3)
    assert DiffTaskResult.from_dict(json.loads(json.dumps(stored))).summary == summary


def test_a_tables_outcome_in_a_multi_table_check() -> None:
    differs = outcome_of("public.items", DiffSummary.from_dict(_written()))
    assert differs == {"table": "public.items", "outcome": DIFFERS, "rows_checked": 200,
                       "diff_rows_by_pair": {"n1/n2": 3}, "diff_partial": False,
                       "diff_file": "/out/diffs/d.json",
                       "task_id": "td_20240315_123456_abcdef"}
    same = DiffSummary.from_dict(_written(diff_rows=0, diff_rows_by_pair={}))
    assert outcome_of("public.items", same)["outcome"] == IDENTICAL
