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
from ace_shared.difffile.format import values_text
from ace_shared.difffile.view import PairRow

SPOOL_BLOCK = 1000  # records compared and spooled at a time
SPOOL_MEMORY = 32 * 1024 * 1024  # bytes, about, of spooled rows held in memory before files
ROW_OVERHEAD = 64  # bytes, about, that Python adds to each row's text held


class PartialsView:
    """Differing rows read straight from the partial files, in range order.

    The partial files are read once, and every pair side's rows, already
    serialized, spooled into files of their own beside the partials; the diff
    file is then written from those spools. Rows travel as the text the diff
    file holds (see :class:`~ace_shared.diff.workdir.DiffRecord`): no row is
    parsed or serialized here, only compared and copied.

    The first call to :meth:`pairs` (or :meth:`side_rows`) spools whatever is
    not spooled yet. A runner that sees its first batches finish may spool them
    earlier (:meth:`spool_ready`), while the later ones still wait on the nodes.

    Spools are held in memory up to about ``SPOOL_MEMORY`` bytes in all (a diff of
    some thousands of rows, as a re-check's often is, is then never written and
    read back); past it, every spool goes to its file, and memory holds no more.
    """

    def __init__(self, nodes: Sequence[str], columns: Sequence[dict[str, str]],
                 key: Sequence[str], partials: Sequence[str | Path]) -> None:
        self.nodes, self.columns, self.key = list(nodes), list(columns), list(key)
        self._partials = [str(p) for p in partials]
        self._counts: list[tuple[str, str, int]] | None = None
        self._spools: dict[tuple[str, str, str], Path] = {}
        self._pairs = list(itertools.combinations(range(len(self.nodes)), 2))
        self._tally = [0] * len(self._pairs)
        self._files: dict[tuple[str, str, str], IO[str]] = {}
        self._held: dict[tuple[str, str, str], list[str]] | None = {}  # None: spooled to files
        self._held_size = 0
        self._spooled: list[str] = []  # the partial files spooled so far, in order

    def records(self) -> Iterator[DiffRecord]:
        for path in self._partials:
            yield from read_partial(path)

    def use_partials(self, partials: Sequence[str | Path]) -> None:
        """The partial files the view stands for, once every batch has ended.

        Those spooled early must come first: they are the batches that ended
        first in range order, and every later one is spooled after them.
        """
        paths = [str(p) for p in partials]
        if paths[:len(self._spooled)] != self._spooled:
            raise ValueError("partial files were spooled out of range order")
        self._partials = paths

    def spool_ready(self, finished: Sequence[str | Path]) -> None:
        """Spool the partial files of ``finished``, the batches that ended, first in range
        order, with no batch before them still running (those already spooled are skipped)."""
        paths = [str(p) for p in finished]
        if paths[:len(self._spooled)] != self._spooled:
            raise ValueError("partial files were spooled out of range order")
        self._spool(paths[len(self._spooled):])

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def pairs(self) -> list[tuple[str, str, int]]:
        if self._counts is None:
            self._spool_once()
        assert self._counts is not None
        return self._counts

    def _spool_once(self) -> None:
        try:
            self.spool_ready(self._partials)
        finally:
            self.close()
        self._counts = [(self.nodes[i], self.nodes[j], c)
                        for (i, j), c in zip(self._pairs, self._tally, strict=True) if c]

    def _write(self, i: int, j: int, side: int, rows: list[str]) -> None:
        if not rows:
            return
        where = (self.nodes[i], self.nodes[j], self.nodes[side])
        if self._held is not None:
            self._held_size += sum(map(len, rows)) + ROW_OVERHEAD * len(rows)
            if self._held_size <= SPOOL_MEMORY:
                self._held.setdefault(where, []).extend(rows)
                return
            held, self._held = self._held, None  # too much to hold: every spool to its file
            for at, lines in held.items():
                self._to_file(at, lines)
        self._to_file(where, rows)

    def _to_file(self, where: tuple[str, str, str], rows: list[str]) -> None:
        fh = self._files.get(where)
        if fh is None:
            folder = spool_folder(self._partials, id(self))
            assert folder is not None
            path = folder / f"{len(self._spools):04d}.jsonl"
            self._spools[where] = path
            fh = self._files[where] = open(path, "w", encoding="utf-8")  # noqa: SIM115
        rows.append("")  # a line break after the last row too
        fh.write("\n".join(rows))

    def _spool(self, paths: list[str]) -> None:
        records = itertools.chain.from_iterable(
            read_partial_texts(path, self.nodes) for path in paths)
        # a block of records at a time, each pair in one sweep over the block
        while block := list(itertools.islice(records, SPOOL_BLOCK)):
            # each row's values once, not once for every pair it is in
            values = [[values_text(x) for x in t] for t in block]
            for n, (i, j) in enumerate(self._pairs):
                differ = [(t[i], t[j]) for t, v in zip(block, values, strict=True)
                          if t[i] != t[j] and v[i] != v[j]]
                self._tally[n] += len(differ)
                self._write(i, j, i, [left for left, _ in differ if left != "null"])
                self._write(i, j, j, [right for _, right in differ if right != "null"])
        self._spooled.extend(paths)

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]:
        """``side``'s rows of the pair, each already serialized as JSON, in key order."""
        if self._counts is None:
            self._spool_once()
        if self._held is not None:
            yield from self._held.get((left, right, side), ())
            return
        path = self._spools.get((left, right, side))
        if path is None:
            return
        with open(path, encoding="utf-8", newline="\n") as fh:
            for line in fh:
                yield line[:-1]

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        for rec in self.records():
            lt, rt = rec.texts.get(left), rec.texts.get(right)
            if lt != rt and (lt is None or rt is None or values_text(lt) != values_text(rt)):
                rows = rec.rows
                yield PairRow(rec.key, rows.get(left), rows.get(right))
