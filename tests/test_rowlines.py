"""The pure parts of one-pass comparison: COPY lines back to keys, and stream chunks."""

from __future__ import annotations

from ace_shared.diff import differ
from ace_shared.diff.ranges import KeyRange
from ace_shared.diff.rowlines import differing_lines, line_key, line_keys
from ace_shared.diff.tuning import DiffTuning


def test_a_line_gives_back_the_key_text_copy_escaped() -> None:
    # COPY writes a backslash, tab, newline, CR, ... inside a field as an escape
    assert line_key(b"a\\tb\tc\\nd\\\\e\t123\n") == ("a\tb", "c\nd\\e")
    assert line_key("\u00fc \\r\\b\\f\\v\t-5\n".encode()) == ("\u00fc \r\b\f\v",)
    assert line_key(b"\\\\x00ff\t7\n") == ("\\x00ff",)  # bytea text
    assert line_key(b"\t7\n") == ("",)


def test_the_keys_of_many_lines_are_each_key_once_as_each_line_gives_it() -> None:
    # two nodes' lines of one key differ only in their hash: the key is there once
    lines = {b"a\\tb\tc\t1\n", b"a\\tb\tc\t2\n", b"\\\\x00ff\t7\n", b"\t7\n"}
    assert line_keys(lines) == {line_key(line) for line in lines}
    assert line_keys(lines) == {("a\tb", "c"), ("\\x00ff",), ("",)}
    assert line_keys([]) == set()


def test_lines_not_sent_by_every_node_are_the_differing_ones() -> None:
    n1 = [b"1\t10\n", b"2\t20\n", b"3\t30\n"]
    n2 = [b"3\t30\n", b"2\t21\n", b"1\t10\n"]  # another order, one hash changed
    n3 = [b"1\t10\n", b"2\t20\n", b"3\t30\n", b"4\t40\n"]  # one more row
    assert differing_lines([n1, n2, n3]) == {b"2\t20\n", b"2\t21\n", b"4\t40\n"}
    assert differing_lines([n1, list(reversed(n1))]) == set()


def test_neighbouring_sub_ranges_are_streamed_together_up_to_the_row_bound() -> None:
    subs = [KeyRange(i, (str(i),), (str(i + 1),)) for i in range(6)]
    rows = DiffTuning().stream_rows // 2
    chunks = differ.stream_chunks([(subs[0], rows), (subs[1], rows), (subs[2], rows),
                                   (subs[4], 1), (subs[5], 1)])
    assert [(c.lower, c.upper) for c in chunks] == [
        (("0",), ("2",)), (("2",), ("3",)), (("4",), ("6",))]
