"""Comparing the nodes' rows of a key range as the raw lines ``COPY ... TO STDOUT`` sends.

Each node sends one line per row, ``key columns<TAB>row hash``. A row is the
same everywhere exactly when every node sent its line (same key text, same
hash), so the keys that differ are those of the lines some node did not send.
That is a few set operations done in C over the lines as they came off the
wire: no Python row per row, no ordering of keys in Python (which could not
match PostgreSQL's collations, enums and composite keys anyway). Only the
lines that differ are decoded back into keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from psycopg2.extensions import cursor

from ace_shared.diff.queries import PINNED_PLAN, Query
from ace_shared.diff.ranges import Key

# what COPY's text format writes for the characters it escapes (it never writes octal or hex)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPED = re.compile(r"\\(.)", re.S)


class LineSink:
    """A file for ``copy_expert`` keeping each line as it arrives: ``write`` is ``list.append``."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.write = self.lines.append


def copy_lines(q: Query) -> Callable[[cursor], list[bytes]]:
    """Run a ``COPY ... TO STDOUT`` query; its lines, undecoded.

    ``COPY`` takes no bound parameters, so they are merged into the text by
    psycopg2's own quoting, exactly as ``execute`` would merge them.
    """
    query, params = q

    def run(cur: cursor) -> list[bytes]:
        sink = LineSink()
        cur.execute(PINNED_PLAN)
        cur.copy_expert(cur.mogrify(query, params), sink)
        return sink.lines
    return run


def differing_lines(per_node: Iterable[list[bytes]]) -> set[bytes]:
    """The lines not every node sent.

    One set is built (the first node's); the others' lines are only looked up
    in it, and then gathered: every line sent, less those every node sent.
    """
    per = list(per_node)
    if not per:
        return set()
    first, *rest = per
    sent = set(first)
    common = sent.intersection(*rest)
    for lines in rest:
        sent.update(lines)
    sent -= common
    return sent


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def line_key(line: bytes) -> Key:
    """The key of a ``key columns<TAB>hash`` line, as the text PostgreSQL printed for it."""
    return _key_text(line[:line.rindex(b"\t")])


def line_keys(lines: Iterable[bytes]) -> set[Key]:
    """The keys of ``key columns<TAB>hash`` lines (see :func:`line_key`), each decoded once
    however many nodes' lines name it."""
    return set(map(_key_text, {line[:line.rindex(b"\t")] for line in lines}))


def _key_text(fields_text: bytes) -> Key:
    # every session pins client_encoding to UTF8; a tab in a value is escaped, so
    # the tabs are the fields' own
    fields = fields_text.decode("utf-8").split("\t")
    if b"\\" in fields_text:
        fields = [_unescape(f) if "\\" in f else f for f in fields]
    return tuple(fields)
