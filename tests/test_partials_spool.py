"""The merge's spools: held in memory while a diff is small, in files past a bound.

A diff file is written pair by pair from every pair side's rows. Those rows are
held in memory up to ``SPOOL_MEMORY`` (a re-check's few thousand rows are never
written out and read back), and past it every side goes to a file of its own,
so memory stays bounded however large the diff. Either way the rows come back
the same, in key order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from reports_helpers import partials_view

from ace_shared.diff import partials
from ace_shared.diff.partials import PartialsView

NODES = ["n1", "n2", "n3"]
COLUMNS = [("id", "bigint"), ("v", "text")]


def _records(count: int, width: int) -> list[dict[str, dict[str, Any] | None]]:
    """Rows that differ on every node (every fifth missing on n2), ``width`` characters."""
    return [{"n1": {"id": str(i), "v": f"{i:0{width}d}"},
             "n2": None if i % 5 == 0 else {"id": str(i), "v": f"{i:0{width}d}!"},
             "n3": {"id": str(i), "v": f"{i:0{width}d}?"}} for i in range(count)]


def _read(view: PartialsView) -> dict[tuple[str, str, str], list[str]]:
    got = {}
    for left, right, count in view.pairs():
        for side in (left, right):
            got[(left, right, side)] = list(view.side_rows(left, right, side))
        # every differing row is on one side at least
        assert count >= max(len(got[(left, right, left)]), len(got[(left, right, right)]))
    return got


def _spooled_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("spool-*/*.jsonl"))


def test_a_small_diff_is_spooled_in_memory(tmp_path: Path) -> None:
    records = _records(2000, 20)
    view = partials_view(tmp_path, NODES, COLUMNS, ["id"], [records[:700], records[700:]])
    got = _read(view)
    assert [c for *_, c in view.pairs()] == [2000, 2000, 2000]
    assert len(got[("n1", "n2", "n1")]) == 2000 and len(got[("n1", "n2", "n2")]) == 1600
    assert got[("n1", "n3", "n3")][:2] == [
        '{"id": "0", "v": "00000000000000000000?"}', '{"id": "1", "v": "00000000000000000001?"}']
    assert _spooled_files(tmp_path) == []


def test_a_diff_past_the_bound_goes_to_files_and_reads_back_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """About 90 MB of spooled rows at the default bound (32 MB): every side in its file,
    and the rows the same, in the same order, as when all are held in memory."""
    records = _records(40_000, 300)
    batches = [records[i:i + 10_000] for i in range(0, len(records), 10_000)]
    big = tmp_path / "files"
    big.mkdir()
    view = partials_view(big, NODES, COLUMNS, ["id"], batches)
    view.spool_ready([big / "part_000000000.jsonl"])  # the first batch early, as a runner does
    in_files = _read(view)
    assert len(_spooled_files(big)) == 6  # each side of each of the three pairs
    monkeypatch.setattr(partials, "SPOOL_MEMORY", 1 << 40)
    held = tmp_path / "held"
    held.mkdir()
    in_memory = _read(partials_view(held, NODES, COLUMNS, ["id"], batches))
    assert _spooled_files(held) == []
    assert in_files == in_memory
    assert len(in_files[("n2", "n3", "n3")]) == 40_000
