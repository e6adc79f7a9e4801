"""A read-only view of a diff's differing rows, pair by pair, streamed.

The JSON diff file, the CSV and the HTML report are all written from this one
view, so they cannot disagree. A diff in progress is served by
:class:`ace_shared.diff.partials.PartialsView` (its batches' partial files);
:class:`FileView` serves an existing diff file (for re-rendering).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ace_shared.difffile.format import Row


@dataclass(frozen=True)
class PairRow:
    """One differing key of a node pair: each side's row, ``None`` where that node lacks it."""

    key: tuple[str, ...]
    left: Row | None
    right: Row | None


class DiffView(Protocol):
    # read-only, so that a view may hold them in lists, tuples or anything else in order
    @property
    def nodes(self) -> Sequence[str]: ...
    @property
    def columns(self) -> Sequence[dict[str, str]]: ...
    @property
    def key(self) -> Sequence[str]: ...

    def pairs(self) -> list[tuple[str, str, int]]:
        """``(left, right, differing keys)`` for every pair that differs, in node order."""

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        """The differing keys of one pair, in key order."""

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]:
        """One side's rows of a pair, serialized as JSON, in key order."""


class FileView:
    """Differing rows of an existing diff file (loaded whole; for re-rendering reports)."""

    def __init__(self, data: dict[str, Any]) -> None:
        summary = data.get("summary", {})
        self.summary = summary
        self.key = list(summary.get("primary_key", []))
        self.columns = list(summary.get("columns", []))
        self.nodes = list(summary.get("nodes", []))
        self._diffs: dict[str, dict[str, list[Row]]] = data.get("diffs", {})

    def pairs(self) -> list[tuple[str, str, int]]:
        out = []
        for name, sides in self._diffs.items():
            a, b = name.split("/", 1)
            keys = {self._key_of(r) for side in sides.values() for r in side}
            out.append((a, b, len(keys)))
        return out

    def _key_of(self, row: Row) -> tuple[str, ...]:
        return tuple(json.dumps(row.get(k)) for k in self.key)

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]:
        for row in self._diffs.get(f"{left}/{right}", {}).get(side, []):
            yield json.dumps(row, ensure_ascii=False)

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        sides = self._diffs.get(f"{left}/{right}", {})
        lrows = {self._key_of(r): r for r in sides.get(left, [])}
        rrows = {self._key_of(r): r for r in sides.get(right, [])}
        order = list(lrows) + [k for k in rrows if k not in lrows]
        for k in order:
            row = lrows.get(k) or rrows.get(k) or {}
            yield PairRow(tuple(str(row.get(c)) for c in self.key), lrows.get(k), rrows.get(k))
