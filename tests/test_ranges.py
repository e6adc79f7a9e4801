"""Key-range planning: every key of the table lands in exactly one range.

If two ranges overlapped, a differing row would be reported twice; if they left a
gap, it would never be compared. These properties are what make a diff complete.
"""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_shared.diff.ranges import (
    KeyRange,
    batches,
    dedupe_sorted,
    pick_boundaries,
    plan_ranges,
    range_count_for,
    ranges_from_boundaries,
    sorted_everywhere,
    split_by_sizes,
    split_range,
    tapered_sizes,
)

# Keys as the planner sees them: tuples of text, already in (here: Python's) order.
key_parts = st.text(alphabet="abcxyz019", min_size=0, max_size=4)
keys_1 = st.lists(st.tuples(key_parts), max_size=200).map(sorted)
keys_2 = st.lists(st.tuples(key_parts, key_parts), max_size=200).map(sorted)
any_sorted_keys = st.one_of(keys_1, keys_2)
strict_boundaries = any_sorted_keys.map(dedupe_sorted)


def assert_well_formed(ranges: list[KeyRange], lower: object = None, upper: object = None) -> None:
    assert ranges, "there is always at least one range"
    assert [r.index for r in ranges] == list(range(len(ranges)))
    assert ranges[0].lower == lower
    assert ranges[-1].upper == upper
    for before, after in zip(ranges, ranges[1:], strict=False):
        assert before.upper == after.lower, "ranges must touch: no gap, no overlap"
        assert before.upper is not None
    inner = [r.upper for r in ranges[:-1]]
    assert inner == sorted(set(inner)), "cut points strictly increase"


def containing(ranges: list[KeyRange], key: tuple[str, ...]) -> list[int]:
    return [r.index for r in ranges
            if (r.lower is None or r.lower <= key) and (r.upper is None or key < r.upper)]


@given(strict_boundaries)
def test_ranges_from_boundaries_cover_the_whole_key_space(boundaries: list[tuple[str, ...]]) -> None:
    ranges = ranges_from_boundaries(boundaries)
    assert len(ranges) == len(boundaries) + 1
    assert_well_formed(ranges)


@given(any_sorted_keys, st.integers(min_value=0, max_value=60))
@settings(max_examples=100)
def test_pick_boundaries_are_strictly_increasing_and_at_most_parts_minus_one(
        keys: list[tuple[str, ...]], parts: int) -> None:
    chosen = pick_boundaries(keys, parts)
    assert len(chosen) <= max(0, parts - 1)
    assert all(a < b for a, b in zip(chosen, chosen[1:], strict=False))
    assert set(chosen) <= set(keys), "boundaries are real keys"
    distinct = len(set(keys))
    if parts >= 2 and distinct >= parts:
        assert len(chosen) == parts - 1, "enough distinct keys give exactly parts ranges"


@given(any_sorted_keys, st.integers(min_value=1, max_value=40))
@settings(max_examples=100)
def test_every_sampled_key_falls_in_exactly_one_planned_range(
        keys: list[tuple[str, ...]], parts: int) -> None:
    ranges = ranges_from_boundaries(pick_boundaries(keys, parts))
    assert_well_formed(ranges)
    for k in keys:
        assert len(containing(ranges, k)) == 1
    # keys the sample never saw (smaller, larger, in between) are covered too
    for k in [(), ("~~~~~",), ("~", "~")]:
        assert len(containing(ranges, k)) == 1


@given(any_sorted_keys, st.integers(min_value=2, max_value=20))
def test_pick_boundaries_balances_the_parts(keys: list[tuple[str, ...]], parts: int) -> None:
    distinct = dedupe_sorted(keys)
    chosen = pick_boundaries(distinct, parts)
    if len(distinct) < parts * 2:
        return
    ranges = ranges_from_boundaries(chosen)
    sizes = [sum(1 for k in distinct if containing([r], k)) for r in ranges]
    ideal = len(distinct) / parts
    assert max(sizes) <= ideal + 2
    assert sum(sizes) == len(distinct)


@given(strict_boundaries, st.data())
def test_split_range_stays_inside_its_parent(boundaries: list[tuple[str, ...]],
                                              data: st.DataObject) -> None:
    ranges = ranges_from_boundaries(boundaries)
    parent = data.draw(st.sampled_from(ranges))
    inner_pool = [("m",), ("m", "a"), ("n",), ("b",), ("y", "z"), ("0",), ("zz",)]
    inner = sorted(k for k in set(inner_pool)
                   if (parent.lower is None or parent.lower < k)
                   and (parent.upper is None or k < parent.upper))
    subs = split_range(parent, inner)
    assert len(subs) == len(inner) + 1
    assert_well_formed(subs, parent.lower, parent.upper)


@given(st.lists(st.integers(), max_size=50), st.integers(min_value=-3, max_value=60))
def test_batches_keep_every_range_once_in_order(items: list[int], size: int) -> None:
    ranges = [KeyRange(i, None, None) for i in range(len(items))]
    groups = batches(ranges, size)
    assert [r for g in groups for r in g] == ranges
    assert all(1 <= len(g) <= max(1, size) for g in groups)


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=0, max_value=64),
       st.integers(min_value=1, max_value=8))
def test_automatic_tasks_taper_and_give_every_worker_process_the_same_count(
        total: int, slots: int, waves: int) -> None:
    sizes = tapered_sizes(total, slots, waves)
    groups = split_by_sizes([KeyRange(i, None, None) for i in range(total)], sizes)
    assert [r.index for g in groups for r in g] == list(range(total))  # each once, in order
    if not total:
        assert sizes == []
        return
    assert min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)  # the queue hands out the large ones first
    if slots <= 0:
        assert sizes == [1] * total
        return
    assert len(sizes) >= min(total, slots)  # every process gets work
    if total >= slots * waves:
        assert len(sizes) % slots == 0  # and as many tasks as every other
    full = slots * waves * (waves + 1) // 2
    if waves > 1 and total >= full:
        assert len(sizes) == slots * waves
        # the last wave holds about 1/waves of what the first does
        assert sum(sizes[-slots:]) * waves <= sum(sizes[:slots]) + waves


def test_automatic_tasks_for_a_million_rows_on_four_processes() -> None:
    assert tapered_sizes(101, 4) == [11, 10, 10, 10, 8, 8, 7, 7, 5, 5, 5, 5, 3, 3, 2, 2]
    assert tapered_sizes(30, 4) == [4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1]  # three waves fit
    assert tapered_sizes(7, 4) == [2, 2, 2, 1]  # too few to taper: an even cut
    assert tapered_sizes(101, 0) == [1] * 101  # no worker seen: one range per task
    with pytest.raises(ValueError):
        split_by_sizes([KeyRange(0, None, None)], [2])


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1000, max_value=100000))
def test_range_count_gives_blocks_of_at_most_block_rows(rows: int, block_rows: int) -> None:
    n = range_count_for(rows, block_rows)
    assert n >= 1
    assert rows / n <= block_rows
    if n > 1:
        assert rows / (n - 1) > block_rows, "no more ranges than needed"


@given(strict_boundaries)
def test_key_ranges_survive_json(boundaries: list[tuple[str, ...]]) -> None:
    for r in ranges_from_boundaries(boundaries):
        assert KeyRange.from_json(r.to_json()) == r


def test_pick_boundaries_with_few_keys() -> None:
    assert pick_boundaries([], 5) == []
    assert pick_boundaries([("a",)], 1) == []
    assert pick_boundaries([("a",), ("a",), ("b",)], 10) == [("b",)]
    assert pick_boundaries([("a",)], 3) == [("a",)]
    keys = [(str(i).zfill(3),) for i in range(100)]
    chosen = pick_boundaries(keys, 4)
    assert chosen == [("025",), ("050",), ("075",)]
    assert bisect.bisect(keys, chosen[0]) == 26


rank_lists = st.integers(min_value=0, max_value=40).flatmap(
    lambda n: st.lists(st.permutations(list(range(n))), min_size=1, max_size=4))


@given(rank_lists)
def test_kept_boundaries_increase_on_every_node(ranks: list[list[int]]) -> None:
    kept = sorted_everywhere(ranks)
    assert kept == sorted(set(kept))
    for r in ranks:
        assert all(r[a] < r[b] for a, b in zip(kept, kept[1:], strict=False))


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=4))
def test_nodes_that_agree_keep_every_boundary(n: int, nodes: int) -> None:
    assert sorted_everywhere([list(range(n))] * nodes) == list(range(n))


def test_one_boundary_out_of_place_costs_only_its_neighbourhood() -> None:
    planner = list(range(10))
    other = [0, 1, 2, 3, 5, 6, 7, 8, 9, 4]  # the other node sorts boundary 4 last
    ranks = [planner, [other.index(i) for i in range(10)]]
    kept = sorted_everywhere(ranks)
    assert 4 not in kept
    assert len(kept) >= 7
    assert sorted_everywhere([planner, planner[::-1]]) == []


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=1, max_value=40),
       st.integers(min_value=1, max_value=20))
def test_planned_ranges_cover_the_key_space_and_cut_inside_themselves(n, parts, fanout):
    cuts = [(f"{i:05d}",) for i in range(n)]
    planned = plan_ranges(cuts, parts, fanout)
    assert planned[0].lower is None and planned[-1].upper is None
    assert [r.index for r in planned] == list(range(len(planned)))
    for a, b in zip(planned, planned[1:], strict=False):
        assert a.upper == b.lower
    for r in planned:
        assert len(r.inner) <= max(0, fanout - 1) or fanout == 1
        points = [r.lower, *r.inner, r.upper]
        inside = [p for p in points if p is not None]
        assert inside == sorted(inside) and len(set(inside)) == len(inside)
    assert len(planned) <= max(1, parts) + 1
    # cuts are only ever taken from the plan's own, and all are used when they all fit
    used = {r.lower for r in planned if r.lower} | {c for r in planned for c in r.inner}
    assert used <= set(cuts)
    if n <= parts - 1 or fanout > n:
        assert used == set(cuts)


def test_a_range_with_inner_cuts_travels_through_json():
    r = KeyRange(3, ("a",), ("z",), (("f",), ("m",)))
    assert KeyRange.from_json(r.to_json()) == r
    assert KeyRange.from_json([1, None, None]) == KeyRange(1, None, None)
