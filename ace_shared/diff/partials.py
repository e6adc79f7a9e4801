"""A diff view over the partial files of a diff in progress (a :class:`DiffView`).

The merge writes the diff file, the CSV and the HTML report from this one view.
It reads the batches' partial files in range order and never holds more than
one record at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from ace_shared.diff.workdir import DiffRecord, read_partial, read_partial_texts, spool_folder
from ace_shared.difffile.view import PairRow

SPOOL_BLOCK = 1000  # records compared and spooled at a time


class PartialsView:
    """Differing rows read straight from the partial files, in range order.

    The first call to :meth:`pairs` (or :meth:`side_rows`) reads the partial
    files once and spools every pair side's rows, already serialized, into
    files of their own beside the partials; the diff file is then written
    from those spools. Rows travel as the text the diff file holds (see
    :class:`~ace_shared.diff.workdir.DiffRecord`): no row is parsed or
    serialized here, only compared and copied.
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
        pairs = list(itertools.combinations(range(len(self.nodes)), 2))
        counts = [0] * len(pairs)
        files: dict[tuple[str, str, str], IO[str]] = {}
        folder = self._spool_folder()

        def spool(i: int, j: int, side: int, rows: list[str]) -> None:
            if not rows:
                return
            where = (self.nodes[i], self.nodes[j], self.nodes[side])
            fh = files.get(where)
            if fh is None:
                assert folder is not None
                path = folder / f"{len(files):04d}.jsonl"
                self._spools[where] = path
                fh = files[where] = open(path, "w", encoding="utf-8")  # noqa: SIM115
            rows.append("")  # a line break after the last row too
            fh.write("\n".join(rows))

        records = itertools.chain.from_iterable(
            read_partial_texts(path, self.nodes) for path in self._partials)
        try:
            # a block of records at a time, each pair in one sweep over the block
            while block := list(itertools.islice(records, SPOOL_BLOCK)):
                for n, (i, j) in enumerate(pairs):
                    differ = [(t[i], t[j]) for t in block if t[i] != t[j]]
                    counts[n] += len(differ)
                    spool(i, j, i, [left for left, _ in differ if left != "null"])
                    spool(i, j, j, [right for _, right in differ if right != "null"])
        finally:
            for fh in files.values():
                fh.close()
        self._counts = [(self.nodes[i], self.nodes[j], c)
                        for (i, j), c in zip(pairs, counts, strict=True) if c]

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]:
        """``side``'s rows of the pair, each already serialized as JSON, in key order."""
        if self._counts is None:
            self._spool_once()
        path = self._spools.get((left, right, side))
        if path is None:
            return
        with open(path, encoding="utf-8", newline="\n") as fh:
            for line in fh:
                yield line[:-1]

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        for rec in self.records():
            if rec.texts.get(left) != rec.texts.get(right):
                rows = rec.rows
                yield PairRow(rec.key, rows.get(left), rows.get(right))
