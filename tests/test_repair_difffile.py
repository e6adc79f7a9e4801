"""Reading diff files of both shapes into exact text, and feeding COPY (no database needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ace_shared.difffile.file import load_diff_file
from ace_shared.errors import DiffFileError
from ace_shared.repair.plan import plan_bidirectional, plan_fix_nulls, plan_from_source
from ace_shared.repair.queries import LineStream, copy_field

ORIGINAL = """{
  "n1/n2": {
    "n1": [{"id": 1, "price": 1.10, "tiny": 1e-300, "big": 12345678901234567890123,
            "ok": true, "f": NaN, "doc": {"a": [1.50, -0, null], "b": "x"},
            "_Spock_CommitTS_": "2024-01-01 00:00:00+00", "_Spock_CommitOrigin_": 0}],
    "n2": [{"id": 2, "price": 2, "tiny": null, "big": 1, "ok": false, "f": -Infinity,
            "doc": null}]
  }
}"""


def test_original_files_become_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "orig.json"
    path.write_text(ORIGINAL)
    diff = load_diff_file(path)
    assert not diff.has_summary and diff.nodes == ["n1", "n2"]
    row = diff.pairs[0].side("n1")[0]
    assert row == {"id": "1", "price": "1.10", "tiny": "1e-300",
                   "big": "12345678901234567890123", "ok": "true", "f": "NaN",
                   "doc": '{"a": [1.50, -0, null], "b": "x"}'}
    assert diff.pairs[0].side("n2")[0]["f"] == "-Infinity"


def test_project_files_keep_their_text_and_summary(tmp_path: Path) -> None:
    data = {"diffs": {"n1/n3": {"n1": [{"id": "7", "v": ""}], "n3": [{"id": "7", "v": None}]}},
            "summary": {"cluster_name": "c", "schema_name": "Sales", "table_name": "Order Items",
                        "nodes": ["n1", "n2", "n3"], "primary_key": ["id"]}}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    diff = load_diff_file(path)
    assert diff.nodes == ["n1", "n2", "n3"]
    assert diff.table is not None and diff.table.display == '"Sales"."Order Items"'
    assert diff.pairs[0].side("n1") == [{"id": "7", "v": ""}]
    assert diff.pairs[0].side("n3") == [{"id": "7", "v": None}]


@pytest.mark.parametrize("text", [
    '{"n1": []}', '{"n1/n1": {}}', '{"n1/n2": {"n3": []}}', '{"n1/n2": {"n1": [5]}}',
    '{"diffs": {"a/b": {"a": {}}}}',
])
def test_malformed_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DiffFileError):
        load_diff_file(path)


def _diff(tmp_path: Path, pairs: dict[str, dict[str, list[dict[str, str | None]]]]) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"diffs": pairs, "summary": {"nodes": ["n1", "n2", "n3"]}}))
    return path


def test_plans_follow_each_mode(tmp_path: Path) -> None:
    path = _diff(tmp_path, {
        "n1/n2": {"n1": [{"id": "1", "v": "a"}, {"id": "2", "v": "b"}],
                  "n2": [{"id": "2", "v": None}, {"id": "3", "v": "c"}]},
        "n2/n3": {"n2": [{"id": "2", "v": None}, {"id": "3", "v": "c"}],
                  "n3": [{"id": "1", "v": "a"}, {"id": "2", "v": "z"}]},
    })
    diff = load_diff_file(path)
    (work,) = plan_from_source(diff, "n1", ["id"])
    assert work.node == "n2"
    assert sorted(work.upserts) == [("1",), ("2",)] and list(work.deletes) == [("3",)]

    both = {w.node: w for w in plan_bidirectional(diff, ["id"])}
    assert list(both["n2"].upserts) == [("1",)]
    assert list(both["n1"].upserts) == [("3",)] and list(both["n3"].upserts) == [("3",)]

    fills = {w.node: w for w in plan_fix_nulls(diff, ["id"], ["v"])}
    # n2's NULL is offered 'b' by n1 first (pair order), then 'z' by n3
    assert fills["n2"].fills[("2",)] == {"id": "2", "v": "b"}
    assert set(fills) == {"n2"}


@given(st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=8),
       st.integers(min_value=1, max_value=50))
def test_copy_fields_and_stream_keep_every_value(values: list[str | None], size: int) -> None:
    lines = ["\t".join(copy_field(v) for v in values) + "\n"] * 3
    stream = LineStream(lines)
    out = []
    while chunk := stream.read(size):
        assert len(chunk) <= size
        out.append(chunk)
    text = "".join(out)
    assert text == "".join(lines)
    # decode COPY's text format by its rules: one line per row, tab-separated fields
    first = text.split("\n")[0].split("\t")
    decoded = [None if f == "\\N" else _unescape(f) for f in first]
    assert decoded == values


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\":
            out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[field[i + 1]])
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
