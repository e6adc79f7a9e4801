"""The diff-file format, read and written in one place: this project's files and the original tool's.

* this project's ``{"diffs": {"n1/n2": {"n1": [rows], "n2": [rows]}}, "summary": {...}}``,
  values as the text PostgreSQL prints (``null`` for NULL), written by
  :func:`write_diff_json` one row a line, pairs in node order, summary last;
* the original tool's bare ``{"n1/n2": {...}}``, whose values may be JSON numbers or
  booleans, and whose rows may carry ``_Spock_CommitTS_``-style metadata columns.

Each row this project writes ends with two reserved fields, its provenance on
that node (see :mod:`ace_shared.diff.provenance`):

* ``_ace_commit_ts``: the commit time of the transaction that last wrote the
  row, as UTC text (``2026-12-07 14:51:10.123456+00``), or null where unknown
  (``track_commit_timestamp`` off, a frozen or older row);
* ``_ace_origin``: the node that transaction came from (the node itself for a
  local change), or null where unknown.

They are not values of the row: the reader strips them (as it strips the
original tool's ``_Spock_`` columns) and hands them on as the row's
:class:`RowMeta`, read with :func:`row_meta`; comparisons and repairs see only
the table's columns.

A diff file can be far larger than the memory a repair may use, so it is never
parsed whole: :func:`read_rows` walks its structure by hand and decodes one row
at a time with the C JSON scanner, over a window of about a megabyte of text.

Every value comes back as text, exactly: numbers keep their literal digits
(``1.10`` stays ``1.10``), ``NaN``/``Infinity`` their spelling, booleans become
``true``/``false``, nested JSON is re-serialised with its numbers untouched.
Everything wrong with a file is a :class:`DiffFileError` naming the file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from ace_shared.errors import DiffFileError
from ace_shared.outputs import new_output_path

Row = dict[str, str | None]
Key = tuple[str, ...]
# (pair index, node, row, the row's JSON text when the reader asked for it)
RowItem = tuple[int, str, Row, "str | None"]

# The original tool added these commit-metadata columns to every row it wrote.
METADATA_PREFIX = "_Spock_"
# This project's two reserved fields, last in every row it writes (see the module's docstring).
COMMIT_TS_FIELD = "_ace_commit_ts"
ORIGIN_FIELD = "_ace_origin"
META_FIELDS = (COMMIT_TS_FIELD, ORIGIN_FIELD)
_META_MARK = f', "{COMMIT_TS_FIELD}": '
READ_CHARS = 1 << 20
ROW_LIMIT = 64 << 20
USE_TABLE_DIFF = "use a file written by table-diff."
WRITE_ROWS = 1000  # rows written to the diff file at once
ROWS_AT_ONCE = 1000  # rows read from it at once (see read_row_lists)
ROW_BREAK = ",\n        "


class JsonNumber(str):
    """A number exactly as written in the JSON text (so no float rounding can creep in)."""


_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber,
                            parse_constant=JsonNumber)
# what raw_decode calls, without its wrapper (typeshed leaves the attribute out)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_PLAIN = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, pos: int) -> int:
    """Where the white space from ``pos`` on ends (``_SPACE`` matches anywhere, if only '')."""
    match = _SPACE.match(text, pos)
    return match.end() if match else pos

# ----- writing ------------------------------------------------------------------------------


class RowSource(Protocol):
    def pairs(self) -> list[tuple[str, str, int]]: ...

    def side_rows(self, left: str, right: str, side: str) -> Iterator[str]: ...


def new_diff_path(output_dir: Path, now: datetime | None = None) -> Path:
    """``<output>/diffs/<YYYY-MM-DD>/diffs_<HHMMSSmmm>.json``, unique even within a millisecond."""
    return new_output_path(output_dir, "diffs", "diffs", now)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_diff_json(path: Path, view: RowSource, summary: dict[str, Any]) -> None:
    """Stream the diff file for ``view`` to ``path`` (under a temporary name, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{\n  "diffs": {')
        first_pair = True
        for a, b, _count in view.pairs():
            fh.write(("" if first_pair else ",") + f"\n    {_dump(f'{a}/{b}')}: {{")
            first_pair = False
            for side_i, side in enumerate((a, b)):
                fh.write(("" if side_i == 0 else ",") + f"\n      {_dump(side)}: [")
                first_row = True
                rows = view.side_rows(a, b, side)
                while chunk := list(itertools.islice(rows, WRITE_ROWS)):
                    fh.write(("\n        " if first_row else ROW_BREAK) + ROW_BREAK.join(chunk))
                    first_row = False
                fh.write("\n      ]" if not first_row else "]")
            fh.write("\n    }")
        fh.write("\n  }," if not first_pair else "},")
        fh.write('\n  "summary": ')
        fh.write(json.dumps(summary, ensure_ascii=False, indent=2).replace("\n", "\n  "))
        fh.write("\n}\n")
    os.replace(tmp, path)


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def row_json(row: Row) -> str:
    return _ENCODE(row)


# ----- the reserved provenance fields -------------------------------------------------------


@dataclass(frozen=True)
class RowMeta:
    """A row's provenance on its node: commit time (UTC text) and origin node, each or None."""

    commit_ts: str | None = None
    origin: str | None = None


NO_META = RowMeta()
METAS_KEPT = 4096  # RowMeta a pass over a file shares between rows (then forgets)


class MetaRow(dict[str, Any]):
    """A row's values (a plain :data:`Row`) that also carries its :class:`RowMeta`."""

    meta: RowMeta = NO_META


def row_meta(row: Row | None) -> RowMeta:
    """The provenance a row was read with (all None for files without it)."""
    return getattr(row, "meta", NO_META) if row is not None else NO_META


_ENCODE_TEXT = json.encoder.encode_basestring  # what _ENCODE does with a str, without its machinery
_ORIGIN_MARK = f', "{ORIGIN_FIELD}": '


def with_meta(text: str, commit_ts: str | None, origin: str | None) -> str:
    """A row's JSON text (an object of at least one column) with the reserved fields last."""
    return text[:-1] + meta_tail(commit_ts, origin)


def meta_tail(commit_ts: str | None, origin: str | None) -> str:
    """What :func:`with_meta` puts in place of a row's closing ``}``: the reserved fields
    and the ``}`` after them."""
    return (_META_MARK + ("null" if commit_ts is None else _ENCODE_TEXT(commit_ts))
            + _ORIGIN_MARK + ("null" if origin is None else _ENCODE_TEXT(origin)) + "}")


def values_text(text: str) -> str:
    """A row's JSON text without the reserved fields: what two nodes' rows are compared by.

    The fields are always last; a quote inside a value is escaped, so the mark
    cannot occur inside one.
    """
    at = text.rfind(_META_MARK)
    return text if at < 0 else text[:at] + "}"


# ----- values -------------------------------------------------------------------------------


def _dump_nested(value: Any) -> str:
    """Serialise parsed JSON back to text, writing numbers as they were written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_dump_nested(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_dump_nested(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def text_value(value: Any) -> str | None:
    """The PostgreSQL input text for one value of a diff-file row."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return _dump_nested(value)


_PLAIN_TYPES = {str, type(None)}


def _is_metadata(name: str) -> bool:
    return name.startswith(METADATA_PREFIX) or name in META_FIELDS


_UNSTAMPED, _STAMPED, _OTHER = 0, 1, 2  # how a row's names look (see _clean_row)


def _kind_of(names: tuple[str, ...]) -> int:
    rest = names[:-2] if names[-2:] == META_FIELDS else names
    if any(_is_metadata(str(k)) for k in rest):
        return _OTHER
    return _STAMPED if rest is not names else _UNSTAMPED


def _clean_row(raw: Any, path: Path, where: str, plain_keys: dict[tuple[str, ...], int],
               metas: dict[tuple[Any, Any], RowMeta] | None = None) -> Row:
    """``raw`` as a :data:`Row` of text values, its provenance as its :class:`RowMeta`.

    ``plain_keys`` keeps how each set of names looked, ``metas`` the metadata
    already made (rows one transaction wrote share theirs), both for the next rows.
    """
    if not isinstance(raw, dict):
        raise DiffFileError(f"The diff file {path} has a row that is not an object in {where}; "
                            + USE_TABLE_DIFF)
    names = tuple(raw)
    kind = plain_keys.get(names)
    if kind is None:
        kind = plain_keys[names] = _kind_of(names)
    # this project's files hold only text and nulls: keep such rows as they are (fast)
    if kind != _OTHER and set(map(type, raw.values())) <= _PLAIN_TYPES:
        if kind == _UNSTAMPED:
            return raw
        # its two reserved fields last: off the values, as metadata (a row whose
        # provenance is unknown is a plain row, like one from a file without it)
        commit_ts, origin = raw[COMMIT_TS_FIELD], raw[ORIGIN_FIELD]
        if commit_ts is None and origin is None:
            plain = dict(raw)
            del plain[COMMIT_TS_FIELD], plain[ORIGIN_FIELD]
            return plain
        stamped = MetaRow(raw)
        del stamped[COMMIT_TS_FIELD], stamped[ORIGIN_FIELD]
        meta = None if metas is None else metas.get((commit_ts, origin))
        if meta is None:
            meta = RowMeta(commit_ts, origin)
            if metas is not None:
                if len(metas) >= METAS_KEPT:
                    metas.clear()
                metas[(commit_ts, origin)] = meta
        stamped.meta = meta
        return stamped
    values = ((str(k), text_value(v)) for k, v in raw.items() if not _is_metadata(str(k)))
    commit_ts, origin = raw.get(COMMIT_TS_FIELD), raw.get(ORIGIN_FIELD)
    if commit_ts is None and origin is None:
        return dict(values)
    row = MetaRow(values)
    row.meta = RowMeta(None if commit_ts is None else str(commit_ts),
                       None if origin is None else str(origin))
    return row


def _stamped_text(raw: dict[str, Any], row: Row, written: str) -> str | None:
    """A row's JSON text without its reserved fields, cut from the file's own text when the
    row was written as this project writes it (fields last, in order, ``", "`` and
    ``": "`` between); None otherwise (the caller encodes the row again)."""
    if len(raw) != len(row) + 2:
        return None
    last = reversed(raw)
    if next(last) != ORIGIN_FIELD or next(last) != COMMIT_TS_FIELD:
        return None
    at = written.rfind(_META_MARK)
    return written[:at] + "}" if at > 0 else None


# ----- reading, streamed --------------------------------------------------------------------


class _Window:
    """A window over the file's text that moves on as it is read; one JSON value at a time."""

    def __init__(self, fh: IO[str], path: Path) -> None:
        self.fh, self.path = fh, path
        self.buf, self.pos, self.eof = "", 0, False
        self.start = 0  # where the last value began

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(READ_CHARS)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            self.pos = _skip_space(self.buf, self.pos)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def bad(self, what: str) -> DiffFileError:
        return DiffFileError(f"The diff file {self.path} is not valid JSON ({what}); "
                             + USE_TABLE_DIFF)

    def take(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.bad(f"expected {what}")
        self.pos += 1

    def value(self, decoder: json.JSONDecoder = _DECODER) -> Any:
        """Decode the next JSON value, reading on while it is cut off at the window's end."""
        self.peek()
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 12
                if not cut or not self._fill():
                    raise self.bad(exc.msg) from None
                if len(self.buf) > ROW_LIMIT:
                    raise DiffFileError(f"The diff file {self.path} has a value over "
                                        f"{ROW_LIMIT >> 20} MB; " + USE_TABLE_DIFF) from None
                continue
            if end >= len(self.buf) and self._fill():
                continue  # a number at the window's end may go on in the next chunk
            self.start, self.pos = self.pos, end
            return value

    def element(self) -> Any:
        """The next element of an array, as :meth:`value` reads it.

        An object that starts right where the window stands (a row, as this project
        writes them one after another) and ends inside it is decoded by the C scanner
        alone, without the checks :meth:`value` makes for white space, a value cut off
        at the window's end or a number running on: an object ends at its own ``}``.
        Anything else, or any error, goes to :meth:`value`, which also words the error.
        """
        buf, pos = self.buf, self.pos
        if buf.startswith("{", pos):
            try:
                value, end = _SCAN(buf, pos)
            except (StopIteration, ValueError):
                return self.value()
            self.start, self.pos = pos, end
            return value
        return self.value()

    def more_elements(self, close: str) -> bool:
        """:meth:`more`, taking the usual break between rows (:data:`ROW_BREAK`) at a glance."""
        if self.buf.startswith(ROW_BREAK, self.pos):
            self.pos += len(ROW_BREAK)
            return True
        return self.more(close)

    def name(self, what: str) -> str:
        if self.peek() != '"':
            raise self.bad(f"expected {what}")
        text = self.value()
        self.take(":", "':'")
        return str(text)

    def more(self, close: str) -> bool:
        """After a member or element: True if another follows, False at ``close``."""
        char = self.peek()
        self.pos += 1
        if char == ",":
            return True
        if char == close:
            return False
        raise self.bad(f"expected ',' or '{close}'")

    def empty(self, close: str) -> bool:
        if self.peek() == close:
            self.pos += 1
            return True
        return False


@dataclass
class Layout:
    """What a pass over a diff file saw besides the rows themselves."""

    summary: dict[str, Any] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[tuple[int, str], int] = field(default_factory=dict)
    column_sets: set[tuple[str, ...]] = field(default_factory=set)
    texts: bool = False


def _pair_name(path: Path, name: str, seen: list[tuple[str, str]]) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise DiffFileError(f"The diff file {path} has an entry {name!r} that is not a node "
                            "pair like \"n1/n2\"; " + USE_TABLE_DIFF)
    if (parts[0], parts[1]) in seen:
        raise DiffFileError(f"The diff file {path} lists pair {name} twice; " + USE_TABLE_DIFF)
    return parts[0], parts[1]


def _pair_rows(win: _Window, name: str, layout: Layout) -> Iterator[list[RowItem]]:
    path = win.path
    left, right = _pair_name(path, name, layout.pairs)
    index = len(layout.pairs)
    layout.pairs.append((left, right))
    if win.peek() != "{":
        win.value()  # (a broken file is reported as such first)
        raise DiffFileError(f"The diff file {path} has an entry {name!r} that is not a node "
                            "pair like \"n1/n2\"; " + USE_TABLE_DIFF)
    win.pos += 1
    if win.empty("}"):
        return
    plain: dict[tuple[str, ...], int] = {}
    metas: dict[tuple[Any, Any], RowMeta] = {}
    where = f"pair {name}"
    texts = layout.texts
    while True:
        node = win.name("a node name")
        if node not in (left, right):
            raise DiffFileError(f"The diff file {path} lists node {node} under pair {name}; "
                                + USE_TABLE_DIFF)
        if win.peek() == "n" and win.value() is None:
            pass
        elif win.peek() == "[":
            win.pos += 1
            count = 0
            rows: list[RowItem] = []
            if not win.empty("]"):
                while True:
                    raw = win.element()
                    row = _clean_row(raw, path, where, plain, metas)
                    if not texts:
                        rows.append((index, node, row, None))
                    elif row is raw:  # kept as written: its own text is its JSON
                        rows.append((index, node, row, win.buf[win.start:win.pos]))
                    elif (text := _stamped_text(raw, row, win.buf[win.start:win.pos])):
                        rows.append((index, node, row, text))
                    else:
                        rows.append((index, node, row, row_json(row)))
                    if len(rows) >= ROWS_AT_ONCE:
                        count += len(rows)
                        yield rows
                        rows = []
                    if not win.more_elements("]"):
                        break
            if rows:
                count += len(rows)
                yield rows
            layout.counts[(index, node)] = layout.counts.get((index, node), 0) + count
        else:
            win.value()
            raise DiffFileError(f"The diff file {path} has no row list for {node} under pair "
                                f"{name}; " + USE_TABLE_DIFF)
        if not win.more("}"):
            break
    layout.column_sets.update(tuple(n for n in names if not _is_metadata(str(n)))
                              for names in plain)


def _diffs_rows(win: _Window, layout: Layout) -> Iterator[list[RowItem]]:
    win.pos += 1
    if win.empty("}"):
        return
    while True:
        yield from _pair_rows(win, win.name("a node pair"), layout)
        if not win.more("}"):
            return


def read_rows(path: Path, layout: Layout | None = None) -> Iterator[RowItem]:
    """Every row of the file as ``(pair index, node, row, text)``, in file order, streamed.

    ``text`` is the row as JSON when ``layout.texts`` asks for it (the file's
    own text where the row is kept as written, which saves encoding it again).

    ``layout`` is filled in as the pass goes (the summary, whichever the file
    puts it, is there once the pass ends).
    """
    for rows in read_row_lists(path, layout):
        yield from rows


def read_row_lists(path: Path, layout: Layout | None = None) -> Iterator[list[RowItem]]:
    """:func:`read_rows` a list of up to :data:`ROWS_AT_ONCE` rows at a time, all of one
    node of one pair: a pass that handles rows by the list pays for no step per row."""
    layout = layout if layout is not None else Layout()
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise DiffFileError(f"The diff file {path} cannot be read: {exc}.") from exc
    with fh:
        try:
            yield from _top_level(_Window(fh, path), layout)
        except UnicodeDecodeError as exc:
            raise DiffFileError(f"The diff file {path} cannot be read: {exc}.") from exc


def _top_level(win: _Window, layout: Layout) -> Iterator[list[RowItem]]:
    path = win.path
    if win.peek() != "{":
        win.value()
        raise DiffFileError(f"The diff file {path} is not a JSON object; " + USE_TABLE_DIFF)
    win.pos += 1
    wrapped, bare, stray = False, False, None
    if not win.empty("}"):
        while True:
            name = win.name("a name")
            if name == "diffs" and win.peek() == "{" and not wrapped:
                wrapped = True
                yield from _diffs_rows(win, layout)
            elif "/" in name:
                bare = True
                yield from _pair_rows(win, name, layout)
            else:
                value = win.value(_PLAIN)  # (the summary's numbers are numbers)
                if name == "summary" and value is not None and not isinstance(value, dict):
                    raise DiffFileError(f"The diff file {path} has a summary that is not an "
                                        "object.")
                layout.summary = value if name == "summary" and value else layout.summary
                stray = stray or name
            if not win.more("}"):
                break
    if win.peek():
        raise win.bad("extra data after the end")
    if wrapped and bare:
        raise DiffFileError(f"The diff file {path} has node pairs both inside and outside "
                            '"diffs"; ' + USE_TABLE_DIFF)
    if not wrapped:
        if stray is not None:
            _pair_name(path, stray, [])  # raises: a bare file holds node pairs only
        layout.summary = {}


SUMMARY_MARK = '\n  "summary": '
TAIL_BYTES = (64 << 10, 1 << 20, 16 << 20)


def read_tail_summary(path: Path) -> dict[str, Any] | None:
    """The summary of a file this project wrote, read from its end alone.

    :func:`write_diff_json` puts it last, after a line break and two spaces no
    row line starts with. Any other layout gives ``None``: read the whole file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            for want in TAIL_BYTES:
                fh.seek(max(0, size - want))
                text = fh.read().decode("utf-8", errors="replace")
                at = text.rfind(SUMMARY_MARK)
                if at >= 0:
                    summary, end = _PLAIN.raw_decode(text, at + len(SUMMARY_MARK))
                    whole = text[end:].strip() == "}"
                    return summary if whole and isinstance(summary, dict) else None
                if want >= size:
                    return None
    except (OSError, ValueError):
        return None
    return None

