"""The diff file's provenance fields as a reader sees them, and the origin filters' rules."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import execute, run_ace

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


@pytest.fixture(scope="module")
def untracked(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two nodes with ``track_commit_timestamp = off``, a table differing in one row."""
    from localcluster import LocalCluster, free_ports
    cluster = LocalCluster(tmp_path_factory.mktemp("untracked"), name="untracked",
                           ports=free_ports(2, 18000, 18499), node_names=("u1", "u2"),
                           server_settings={"track_commit_timestamp": "off"})
    cluster.start()
    try:
        cluster.write_cluster_json(Path(os.environ["ACE_CLUSTER_DIR"]))
        for i, v in enumerate(("same", "differs")):
            execute(cluster.node_dsn(i), ["CREATE TABLE public.pv (id int PRIMARY KEY, v text)",
                                          f"INSERT INTO public.pv VALUES (1, 'x'), (2, '{v}')"])
        yield cluster
    finally:
        cluster.stop()


def test_without_commit_timestamps_the_fields_are_null_and_the_summary_says_so_once(
        untracked: Any) -> None:
    run = run_ace("table-diff", "untracked", "public.pv")
    assert run.code == 1, (run.stdout, run.stderr)
    doc = run.diff()
    rows = [r for rs in doc["diffs"]["u1/u2"].values() for r in rs]
    assert [(r["id"], r["_ace_commit_ts"], r["_ace_origin"]) for r in rows] == [
        ("2", None, None), ("2", None, None)]
    note = doc["summary"]["commit_ts_note"]
    assert note.startswith("track_commit_timestamp is off on u1, u2")
    assert run.stderr.count("track_commit_timestamp") == 1
    assert run_ace("table-diff", "untracked", "public.pv", "--against-origin=u1").code == 0


def test_a_rows_text_comes_without_the_fields_however_the_file_is_spaced(
        tmp_path: Path) -> None:
    from ace_shared.difffile.format import Layout
    row = {"id": "1", "v": 'a", "_ace_commit_ts": "x'}
    stamped = {**row, "_ace_commit_ts": TS, "_ace_origin": "n1"}
    for spacing in ({}, {"separators": (",", ":")}, {"indent": 1}):
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"diffs": {"n1/n2": {"n1": [stamped], "n2": []}}}, **spacing))
        [(_, _, got, text)] = list(read_rows(path, Layout(texts=True)))
        assert (dict(got), json.loads(text or "")) == (row, row), spacing
        assert row_meta(got) == RowMeta(TS, "n1")


def test_recovery_mode_picks_the_furthest_survivor_and_refuses_a_tie_or_an_unknown() -> None:
    from ace_shared.errors import RepairError
    from ace_shared.repair.recovery import choose_survivor
    best, why = choose_survivor({"n2": "0/1A2A000", "n3": "0/1A2B3C8", "n4": "0/FFFFFF"}, "n1")
    assert best == "n3"
    assert why == ("Recovery mode repaired from n3: it applied n1's changes up to 0/1A2B3C8, "
                   "further than n2 at 0/1A2A000, n4 at 0/FFFFFF.")
    assert choose_survivor({"n2": "1/0", "n3": "0/FFFFFFFF"}, "n1")[0] == "n2"  # by value
    for positions, words in (({"n2": "0/10", "n3": "0/10"}, "level at"),
                             ({"n2": "0/10", "n3": None}, "cannot tell")):
        with pytest.raises(RepairError, match=words) as raised:
            choose_survivor(positions, "n1")
        assert "--source-of-truth" in str(raised.value) and str(raised.value).count(". ") == 0


def test_the_filters_are_options_of_table_diff_mtree_and_schedules_alike() -> None:
    from ace_shared.config import Settings
    from ace_shared.diff.request import validate_diff_request
    from ace_shared.mtree.request import validate_mtree_request
    base = {"cluster_name": "c", "table_name": "public.t", "against_origin": " n1 ",
            "until": "2026-12-07T14:51:10Z"}
    want = OriginFilter("n1", "2026-12-07 14:51:10.000000+00")
    # a scheduled job's options are a table-diff request's, nodes as a list
    assert validate_diff_request({**base, "nodes": ["n2", "n3"]}, Settings()).origin_filter \
        == want
    assert validate_mtree_request({**base, "action": "table-diff"}, Settings()).origin_filter \
        == want
    with pytest.raises(BadOptionError, match="^--until 'soon' is not a time"):
        validate_diff_request({**base, "until": "soon"}, Settings(), "cli")
