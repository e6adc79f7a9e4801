"""How a planned diff is cut into tasks, and what a saved job carries: pure logic, no server."""

from __future__ import annotations

import pytest

from ace_shared.diff.job import cut_batches
from ace_shared.diff.ranges import KeyRange, ranges_from_boundaries
from ace_shared.diff.tuning import DensityHints, DiffTuning, Strategy


def _ranges(n: int) -> list[KeyRange]:
    return ranges_from_boundaries([(i,) for i in range(1, n)])


def _indexes(groups: list[list[KeyRange]]) -> list[list[int]]:
    return [[r.index for r in g] for g in groups]


def test_a_batch_size_asked_for_is_kept_on_a_fleet_too() -> None:
    assert _indexes(cut_batches(_ranges(7), 3, None, 4)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _indexes(cut_batches(_ranges(7), 3, 2, 4)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_in_process_each_range_is_its_own_batch() -> None:
    assert _indexes(cut_batches(_ranges(4), None, None, 4)) == [[0], [1], [2], [3]]


@pytest.mark.parametrize(("ranges", "slots"), [(100, 4), (20, 4), (3, 8), (1000, 1)])
def test_on_a_fleet_batches_cover_every_range_once_in_order_largest_first(
        ranges: int, slots: int) -> None:
    groups = cut_batches(_ranges(ranges), None, slots, 4)
    assert [i for g in _indexes(groups) for i in g] == list(range(ranges))
    sizes = [len(g) for g in groups]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) >= 1
    assert len(groups) <= max(ranges, slots * 4)


def test_a_tuning_survives_the_job_file_and_an_older_job_gets_the_defaults() -> None:
    tuning = DiffTuning(Strategy.STREAM, leaf_rows=100, exact_plan_rows=10)
    assert DiffTuning.from_dict(tuning.to_dict()) == tuning
    older = DiffTuning().to_dict()
    del older["exact_plan_rows"]  # a job saved before the field existed
    assert DiffTuning.from_dict(older) == DiffTuning()
    assert DiffTuning.from_dict(None) == DiffTuning()


def test_hints_tell_each_jobs_steps_and_forget_the_oldest_jobs() -> None:
    hints = DensityHints()
    hints.count("td_a", "narrow")
    hints.count("td_a", "narrow")
    hints.count("td_b", "whole")
    assert hints.steps("td_a") == {"narrow": 2} and hints.steps("td_b") == {"whole": 1}
    for i in range(DensityHints.KEEP):
        hints.count(f"td_{i}", "whole")
    assert hints.steps("td_a") == {} and hints.steps(f"td_{DensityHints.KEEP - 1}") == {"whole": 1}
