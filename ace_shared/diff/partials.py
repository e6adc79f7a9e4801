"""A diff view over the partial files of a diff in progress (a :class:`DiffView`).

The merge writes the diff file, the CSV and the HTML report from this one view.
It reads the batches' partial files in range order and never holds more than
one record at a time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from ace_shared.diff.workdir import DiffRecord, read_partial, spool_folder
from ace_shared.difffile.view import PairRow


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
        return spool_folder(self._partials, id(self))

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
