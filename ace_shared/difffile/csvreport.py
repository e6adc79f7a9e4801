r"""The CSV rendering of a table diff: one line per node pair, differing key and node.

Columns: ``pair, node, status`` and then every column of the table, in table
order. When the table itself has a column of one of those three names, the
report's own three are written ``ace_pair, ace_node, ace_status`` instead
(with more underscores, ``ace__pair``, should those clash too), so every
header names one column. ``pair`` is ``left/right`` as in the diff file (``n1/n2``), ``node`` is
the node whose row the line shows. For every differing key of a pair there are
two lines, the left node's first; ``status`` says what that node has:

``different``
    Both nodes have a row with this key, and at least one column differs.
    The line shows this node's row.
``only here``
    This node has the row and the other node of the pair lacks it.
``missing``
    This node lacks the row (the other node's line says ``only here``). Only
    the key columns are filled in, with the key the row has on the other
    node; every other column is an empty field that carries no value.

The last two columns, ``commit_ts`` and ``origin``, are the line's node's
provenance for that row (the diff file's ``_ace_commit_ts`` and
``_ace_origin``: commit time in UTC and the node its last change came from),
``\N`` where unknown and empty on a ``missing`` line; on a clash with the
table's columns they take the same prefix as the first three.

Values are the text PostgreSQL prints for them (the same text as in the JSON
diff file). CSV itself cannot tell NULL from an empty string, so this file
writes NULL as the marker ``\N`` (as PostgreSQL's ``COPY`` does) and an empty
string as an empty field. To stay lossless, a text value that is literally
``\N`` (or ``\\N``, ...: backslashes followed by one ``N``) is written with
one more leading backslash. :func:`decode_field` reverses this. The file is
UTF-8 with ``\r\n`` line ends, quoted only where needed (RFC 4180).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from ace_shared.atomicfile import atomic_text_file
from ace_shared.difffile.view import DiffView, PairRow

NULL_MARKER = "\\N"
STATUS_DIFFERENT = "different"
STATUS_ONLY_HERE = "only here"
STATUS_MISSING = "missing"

_LOOKS_LIKE_NULL = re.compile(r"\\+N")


def encode_field(value: str | None) -> str:
    """One value as written to the CSV: ``\\N`` for NULL, backslash-escaped if it looks like it."""
    if value is None:
        return NULL_MARKER
    if value[:1] == "\\" and value[-1:] == "N" and _LOOKS_LIKE_NULL.fullmatch(value):
        return "\\" + value
    return value


def decode_field(field: str) -> str | None:
    """The value a CSV field stands for (the inverse of :func:`encode_field`)."""
    if field == NULL_MARKER:
        return None
    if _LOOKS_LIKE_NULL.fullmatch(field):
        return field[1:]
    return field


OWN_COLUMNS = ("pair", "node", "status")
META_COLUMNS = ("commit_ts", "origin")
_META_FIELDS = ("_ace_commit_ts", "_ace_origin")  # the diff file's reserved fields


def own_columns(table_columns: Collection[str]) -> list[str]:
    """The report's own column names, prefixed with ``ace_`` (more ``_`` as needed) on a clash.

    A table may well have a column named ``status``; the header must still name
    every column once, so a reader (or a spreadsheet) can tell them apart.
    """
    taken = set(table_columns)
    prefix = ""
    while any(prefix + name in taken for name in OWN_COLUMNS + META_COLUMNS):
        prefix = "ace_" if not prefix else prefix[:-1] + "__"
    return [prefix + name for name in OWN_COLUMNS]


def header(view: DiffView) -> list[str]:
    names = [c["name"] for c in view.columns]
    own = own_columns(names)
    prefix = own[0][:-len(OWN_COLUMNS[0])]
    return [*own, *names, *(prefix + m for m in META_COLUMNS)]


def _side_line(pair: str, node: str, status: str, row: dict[str, Any] | None,
               other: dict[str, Any] | None, columns: Sequence[str],
               key: Collection[str]) -> list[str]:
    if row is not None:
        values = [encode_field(row.get(c)) for c in columns]
        meta = [encode_field(row.get(f)) for f in _META_FIELDS]
    else:
        source = other or {}
        values = [encode_field(source.get(c)) if c in key else "" for c in columns]
        meta = ["", ""]
    return [pair, node, status, *values, *meta]


def pair_lines(view: DiffView, left: str, right: str) -> Iterator[list[str]]:
    """The CSV lines of one pair, two per differing key, streamed in key order."""
    columns = [c["name"] for c in view.columns]
    key = frozenset(view.key)
    pair = f"{left}/{right}"
    for pr in view.pair_rows(left, right):
        yield from _lines_for(pair, left, right, pr, columns, key)


def _lines_for(pair: str, left: str, right: str, pr: PairRow, columns: Sequence[str],
               key: Collection[str]) -> Iterator[list[str]]:
    if pr.left is not None and pr.right is not None:
        yield _side_line(pair, left, STATUS_DIFFERENT, pr.left, pr.right, columns, key)
        yield _side_line(pair, right, STATUS_DIFFERENT, pr.right, pr.left, columns, key)
    elif pr.left is not None:
        yield _side_line(pair, left, STATUS_ONLY_HERE, pr.left, None, columns, key)
        yield _side_line(pair, right, STATUS_MISSING, None, pr.left, columns, key)
    elif pr.right is not None:
        yield _side_line(pair, left, STATUS_MISSING, None, pr.right, columns, key)
        yield _side_line(pair, right, STATUS_ONLY_HERE, pr.right, None, columns, key)


def write_csv(path: Path, view: DiffView, summary: dict[str, Any]) -> None:
    """Stream the CSV report of ``view`` to ``path``; it appears there only once complete.

    ``summary`` is accepted for symmetry with the HTML report; a CSV has no
    place for it (it is in the JSON diff file beside this one).
    """
    with atomic_text_file(path, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header(view))
        for left, right, _count in view.pairs():
            writer.writerows(pair_lines(view, left, right))
