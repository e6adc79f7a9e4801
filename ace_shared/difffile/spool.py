"""A diff file's rows spooled to a temporary SQLite file, keyed by pair, node and key.

A repair needs to look rows up by key (does the source list this key too? which
pair offered this row first?) and a rerun needs every distinct key; a diff file
can hold more rows than a process may keep in memory. So the rows are streamed
from the file into a SQLite file beside the work, indexed by ``(pair, node,
key)``, and every later step asks SQLite, whose page cache stays small.

The pass over the rows also tells the :class:`DiffFile` which pairs, row
counts and columns the file really has (:meth:`DiffFile.adopt`), so a diff
file checked by its summary alone is read only once more, here.

The index is unique: a diff file that lists the same key twice for one node
of one pair is refused (which of the two rows a repair should take would be
a guess). Keys are stored as the JSON array of their text values, rows as
the JSON object of their text values, so both come back exactly.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from ace_shared.difffile.file import DiffFile, row_key
from ace_shared.difffile.format import Layout, Row, read_row_lists
from ace_shared.errors import DiffFileError

CHUNK_KEYS = 1000  # distinct keys decoded at once
_quote = json.encoder.encode_basestring
CACHE_KB = 16 * 1024
_SETUP = f"""
PRAGMA journal_mode = MEMORY;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -{CACHE_KB};
CREATE TABLE rows (seq INTEGER PRIMARY KEY, pair INTEGER NOT NULL, node TEXT NOT NULL,
                   key TEXT NOT NULL, row TEXT);
CREATE UNIQUE INDEX rows_key ON rows (pair, node, key);
"""


def key_text(key: tuple[str, ...]) -> str:
    """A key as a JSON array (``json.dumps`` spelling), built by the C string encoder."""
    return "[" + ", ".join(map(_quote, key)) + "]"


def key_texts(rows: list[Row], key: list[str], where: str) -> list[str]:
    """:func:`key_text` of each row's key (:func:`~ace_shared.difffile.file.row_key`,
    which words what is wrong with one), a one-column key's at a glance."""
    if len(key) == 1:
        column = key[0]
        values = [r.get(column) for r in rows]
        if None not in values:
            return ["[" + _quote(v) + "]" for v in cast("list[str]", values)]
    return [key_text(row_key(r, key, where)) for r in rows]


# a list of keys (their rows not kept), in file order: the first of a key stays (see below)
_INSERT_KEYS = ("INSERT OR IGNORE INTO rows SELECT ? + j.key, ?, ?, j.value, NULL "
                "FROM json_each(?) j ORDER BY j.key")


def json_each_works(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has ``json_each`` (built in since 3.38, an option before)."""
    try:
        db.execute("SELECT count(*) FROM json_each('[1]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def connect(path: Path) -> sqlite3.Connection:
    """A connection of its own to a spool (one per thread: SQLite connections stay put)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA cache_size = -{CACHE_KB}")
    return db


class RowSpool:
    """The rows of one diff file in a temporary SQLite file, removed on :meth:`close`."""

    def __init__(self, diff: DiffFile, key: list[str], keep_rows: bool = True,
                 folder: Path | None = None) -> None:
        self.diff = diff
        self.key = list(key)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="ace-spool-", dir=folder))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.path = self.folder / "rows.sqlite"
        self.db = connect(self.path)
        try:
            self.db.executescript(_SETUP)
            self._load(keep_rows)
        except BaseException:
            self.close()
            raise

    def _lists(self, keep_rows: bool) -> Iterator[tuple[int, int, str, list[str], list[Any]]]:
        """The rows as the file is read, a list of one node of one pair at a time: the
        first row's place in the file, the pair, the node, the rows' keys and texts."""
        key = self.key
        layout = Layout(texts=keep_rows)
        seq = 0
        for rows in read_row_lists(self.diff.path, layout):
            index, node = rows[0][0], rows[0][1]
            keys = key_texts([r[2] for r in rows], key, "pair {}/{}".format(*layout.pairs[index]))
            yield seq, index, node, keys, [r[3] for r in rows]
            seq += len(rows)
        self.diff.adopt(layout)  # the pairs and columns the rows really have

    def _load(self, keep_rows: bool) -> None:
        by_array = not keep_rows and json_each_works(self.db)
        self.db.execute("BEGIN")
        for seq, pair, node, keys, texts in self._lists(keep_rows):
            before = self.db.total_changes
            if by_array:
                # the keys as one JSON array, which SQLite takes apart: no binding per row
                self.db.execute(_INSERT_KEYS, (seq, pair, node, json.dumps(keys, ensure_ascii=False)))
            else:
                self.db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?)",
                                    [(seq + i, pair, node, k, t)
                                     for i, (k, t) in enumerate(zip(keys, texts, strict=True))])
            if self.db.total_changes - before < len(keys):
                self._refuse_duplicate([(seq + i, pair, node, k) for i, k in enumerate(keys)])
        self.db.execute("COMMIT")
        self.db.execute("ANALYZE")

    def _refuse_duplicate(self, chunk: list[tuple[int, int, str, str]]) -> None:
        for seq, pair, node, key in chunk:
            first = self.db.execute("SELECT seq FROM rows WHERE pair = ? AND node = ? AND key = ?",
                                    (pair, node, key)).fetchone()[0]
            if first != seq:
                where = "SELECT count(*) FROM rows WHERE pair = ? AND node = ? AND seq <= ?"
                a = self.db.execute(where, (pair, node, first)).fetchone()[0]
                b = a + 1 + self.db.execute(
                    "SELECT count(*) FROM rows WHERE pair = ? AND node = ? AND seq > ? AND "
                    "seq < ?", (pair, node, first, seq)).fetchone()[0]
                raise DiffFileError(
                    f"The diff file {self.diff.path} lists the same key twice for node {node} "
                    f"in pair {self.diff.pairs[pair].name} (its rows {a} and {b}), so it cannot "
                    "say which row is right; run table-diff again for a clean file.")

    def distinct_keys(self, db: sqlite3.Connection | None = None) -> Iterator[tuple[str, ...]]:
        """Every distinct key of the file, each once (in no particular order)."""
        cur = (db or self.db).execute("SELECT DISTINCT key FROM rows")
        # each key is a JSON array: a block of them is one array of arrays, decoded at once
        while block := cur.fetchmany(CHUNK_KEYS):
            yield from map(tuple, json.loads("[" + ", ".join(k for (k,) in block) + "]"))

    def close(self) -> None:
        self.db.close()
        self._cleanup()


def decode_row(text: str) -> Row:
    row: Row = json.loads(text)
    return row
