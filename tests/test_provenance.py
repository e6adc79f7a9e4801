"""The diff file's provenance fields as a reader sees them, and the origin filters' rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ace_shared.diff.provenance import OriginFilter, parse_until
from ace_shared.difffile.file import load_diff_header
from ace_shared.difffile.format import RowMeta, read_rows, row_meta, values_text, with_meta
from ace_shared.errors import BadOptionError

TS = "2026-12-07 14:51:10.123456+00"


def _file(tmp_path: Path) -> Path:
    rows = {"n2": [{"id": "1", "v": "a", "_ace_commit_ts": None, "_ace_origin": "n1"}],
            "n3": [{"id": "1", "v": "b", "_ace_commit_ts": TS, "_ace_origin": "n1"},
                   {"id": "2", "v": "c", "_ace_commit_ts": None, "_ace_origin": None}]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"diffs": {"n2/n3": rows},
                                "summary": {"primary_key": ["id"]}}))
    return path


def test_rows_come_without_the_fields_and_carry_them_as_metadata(tmp_path: Path) -> None:
    got = [(node, row, row_meta(row)) for _, node, row, _ in read_rows(_file(tmp_path))]
    assert [(n, dict(r)) for n, r, _ in got] == [
        ("n2", {"id": "1", "v": "a"}), ("n3", {"id": "1", "v": "b"}),
        ("n3", {"id": "2", "v": "c"})]
    assert [m for _, _, m in got] == [RowMeta(None, "n1"), RowMeta(TS, "n1"), RowMeta()]


def test_the_fields_are_not_columns_of_the_file(tmp_path: Path) -> None:
    assert load_diff_header(_file(tmp_path)).row_columns() == {"id", "v"}


def test_rows_are_compared_by_their_values_alone() -> None:
    text = json.dumps({"id": "1", "v": 'x", "_ace_commit_ts": "y'}, ensure_ascii=False)
    stamped = with_meta(text, TS, "n1")
    assert json.loads(stamped) == {**json.loads(text), "_ace_commit_ts": TS, "_ace_origin": "n1"}
    assert values_text(stamped) == text
    assert values_text(with_meta(text, None, None)) == values_text(stamped)


def test_until_is_read_as_utc_text_and_a_bad_one_is_one_sentence() -> None:
    assert parse_until("2026-12-07T15:51:10.5+01:00") == "2026-12-07 14:51:10.500000+00"
    assert parse_until("2026-12-07 14:51:10") == "2026-12-07 14:51:10.000000+00"
    with pytest.raises(BadOptionError, match="is not a time"):
        parse_until("yesterday", "--until")


def test_a_key_is_kept_when_one_version_matches_both_filters() -> None:
    f = OriginFilter("n1", "2026-12-07 14:51:10.123456+00")
    assert f.keeps({"n2": None, "n3": (TS, "n1")})
    assert f.keeps({"n2": (None, "n1"), "n3": None})  # unknown time: kept
    assert not f.keeps({"n2": (TS, "n2"), "n3": None})
    assert not f.keeps({"n2": ("2026-12-07 14:51:10.123457+00", "n1"), "n3": None})
    assert OriginFilter().keeps({"n2": None, "n3": (None, None)})
