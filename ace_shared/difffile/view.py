"""A read-only view of a diff's differing rows, pair by pair, streamed.

The JSON diff file, the CSV and the HTML report are all written from this one
view, so they cannot disagree. :class:`PartialsView` reads the partial files
the range workers wrote, in range order, and never holds more than one record
at a time; :class:`FileView` serves an existing diff file (for re-rendering).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from ace_shared.diff.differ import DiffRecord, Row, read_partial


@dataclass(frozen=True)
class PairRow:
    """One differing key of a node pair: each side's row, ``None`` where that node lacks it."""

    key: tuple[str, ...]
    left: Row | None
    right: Row | None


class DiffView(Protocol):
    nodes: Sequence[str]
    columns: Sequence[dict[str, str]]
    key: Sequence[str]

    def pairs(self) -> list[tuple[str, str, int]]:
        """``(left, right, differing keys)`` for every pair that differs, in node order."""

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        """The differing keys of one pair, in key order."""

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]:
        """One side's rows of a pair, serialized as JSON, in key order."""


def _differs(rec: DiffRecord, a: str, b: str) -> bool:
    return rec.rows.get(a) != rec.rows.get(b)


class PartialsView:
    """Differing rows read straight from the partial files, in range order.

    The first call to :meth:`pairs` (or :meth:`side_rows`) reads the partial
    files once and spools every pair side's rows, already serialized, into
    files of their own beside the partials; the diff file is then written
    from those spools without parsing a record again.
    """

    def __init__(self, nodes: Sequence[str], columns: Sequence[dict[str, str]],
                 key: Sequence[str], partials: Sequence[str | Path]) -> None:
        self.nodes, self.columns, self.key = list(nodes), list(columns), list(key)
        self._partials = list(partials)
        self._counts: list[tuple[str, str, int]] | None = None
        self._spools: dict[tuple[str, str, str], Path] = {}

    def records(self) -> Iterator[DiffRecord]:
        for path in self._partials:
            yield from read_partial(path)

    def _spool_folder(self) -> Path | None:
        if not self._partials:
            return None
        folder = Path(self._partials[0]).parent / f"spool-{id(self):x}"
        folder.mkdir(exist_ok=True)
        return folder

    def pairs(self) -> list[tuple[str, str, int]]:
        if self._counts is None:
            self._spool_once()
        assert self._counts is not None
        return self._counts

    def _spool_once(self) -> None:
        pairs = list(itertools.combinations(self.nodes, 2))
        counts = dict.fromkeys(pairs, 0)
        folder = self._spool_folder()
        files: dict[tuple[str, str, str], IO[str]] = {}
        try:
            for rec in self.records():
                dumped: dict[str, str] = {}
                for a, b in pairs:
                    if not _differs(rec, a, b):
                        continue
                    counts[(a, b)] += 1
                    assert folder is not None
                    for side in (a, b):
                        row = rec.rows.get(side)
                        if row is None:
                            continue
                        if side not in dumped:
                            dumped[side] = json.dumps(row, ensure_ascii=False)
                        fh = files.get((a, b, side))
                        if fh is None:
                            path = folder / f"{len(files):04d}.jsonl"
                            self._spools[(a, b, side)] = path
                            fh = files[(a, b, side)] = open(path, "w", encoding="utf-8")  # noqa: SIM115
                        fh.write(dumped[side])
                        fh.write("\n")
        finally:
            for fh in files.values():
                fh.close()
        self._counts = [(a, b, c) for (a, b), c in counts.items() if c]

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]:
        """``side``'s rows of the pair, each already serialized as JSON, in key order."""
        if self._counts is None:
            self._spool_once()
        path = self._spools.get((left, right, side))
        if path is None:
            return
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                yield line.rstrip("\n")

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        for rec in self.records():
            if _differs(rec, left, right):
                yield PairRow(rec.key, rec.rows.get(left), rec.rows.get(right))


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
