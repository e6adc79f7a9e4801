"""Diff files are read streamed: a key listed twice is refused, and a big file costs little memory.

The memory test runs the real ``ace table-repair --dry-run`` as a child process
on a diff file of about 60 MB and reads the child's peak resident size from
``getrusage(RUSAGE_CHILDREN)``: loading such a file whole as Python objects
takes several times its size, streaming takes a small, fixed amount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import pair_rows
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from repair_helpers import CLUSTER, Nodes, ace, assert_error, diff_table

import ace_shared.difffile.format as fmt
from ace_shared.config import load_settings
from ace_shared.difffile.file import load_diff_file, load_diff_header
from ace_shared.difffile.format import write_diff_json
from ace_shared.difffile.spool import RowSpool
from ace_shared.errors import DiffFileError
from ace_shared.repair.plan import plan_from_source
from ace_shared.repair.request import validate_repair_request
from ace_shared.repair.run import run_table_repair
from ace_shared.tasks.ids import new_task_id

TABLE = "public.rp_stream"
BIG_ROWS = 160_000


@pytest.fixture(scope="module")
def table(pg_cluster: Any) -> Nodes:
    nodes = Nodes(pg_cluster)
    nodes.on_all(["DROP TABLE IF EXISTS rp_stream",
                  "CREATE TABLE rp_stream (id int PRIMARY KEY, v text, n numeric)",
                  "INSERT INTO rp_stream SELECT i, 'v' || i, i / 10.0 "
                  "FROM generate_series(1, 50) i"])
    nodes.execute("n2", ["UPDATE rp_stream SET v = 'changed' WHERE id IN (3, 4)"])
    return nodes


def _with_duplicate(path: Path, tmp_path: Path) -> Path:
    data = json.loads(path.read_text())
    side = data["diffs"]["n1/n2"]["n2"]
    side.append(dict(side[0], v="another value"))
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(data))
    return dup


def test_a_key_listed_twice_for_one_node_is_refused(table: Nodes, tmp_path: Path) -> None:
    path, _ = diff_table(TABLE, nodes="n1,n2")
    dup = _with_duplicate(path, tmp_path)
    before = table.snapshots(TABLE)
    for args in (["--source-of-truth=n1"], ["--source-of-truth=n2", "--dry-run"]):
        run = ace("table-repair", CLUSTER, TABLE, f"--diff-file={dup}", *args)
        assert_error(run, "same key twice", "n2", "n1/n2", "table-diff")
        assert "another value" not in run.stderr  # errors never carry data
    assert_error(ace("table-rerun", CLUSTER, TABLE, f"--diff-file={dup}"), "same key twice")
    assert table.snapshots(TABLE) == before
    with pytest.raises(DiffFileError, match="same key twice"):
        plan_from_source(load_diff_file(dup), "n1", ["id"])


@pytest.mark.parametrize("keep_rows", [True, False])
def test_a_key_listed_twice_is_named_by_its_two_rows(tmp_path: Path, keep_rows: bool) -> None:
    """Rows spooled for a repair (with their texts) or a rerun (keys alone) alike."""
    rows = [{"id": str(i), "v": "x"} for i in (1, 2, 3, 1, 4)]
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"diffs": {"n1/n2": {"n1": rows[:2], "n2": rows}},
                                "summary": {"primary_key": ["id"]}}))
    named = r"twice for node n2 in pair n1/n2 \(its rows 1 and 4\)"
    with pytest.raises(DiffFileError, match=named):
        RowSpool(load_diff_header(path), ["id"], keep_rows=keep_rows, folder=tmp_path)


def test_the_summary_is_read_from_the_end_and_the_rows_streamed(table: Nodes,
                                                                 tmp_path: Path) -> None:
    path, data = diff_table(TABLE, nodes="n1,n2")
    head = load_diff_header(path)
    whole = load_diff_file(path)
    assert head.summary == whole.summary == data["summary"]
    assert [p.name for p in head.pairs] == [p.name for p in whole.pairs] == ["n1/n2"]
    # (the rows' values: their provenance fields are metadata, not values)
    assert [row for _, _, row in whole.iter_rows()] == \
        pair_rows(data, "n1/n2", "n1") + pair_rows(data, "n1/n2", "n2")
    # the same content laid out by another writer is still read, only the slow way
    other = tmp_path / "compact.json"
    other.write_text(json.dumps({"summary": data["summary"], "diffs": data["diffs"]}))
    assert load_diff_header(other).summary == data["summary"]


def _write_big_diff(path: Path, rows: int) -> None:
    """A diff file in table-diff's own layout: n2 has every row of n1 with ``v`` changed."""
    filler = "x" * 150
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{\n  "diffs": {\n    "n1/n2": {')
        for side, label in (("n1", "v"), ("n2", "w")):
            fh.write(("," if side == "n2" else "") + f'\n      "{side}": [')
            for i in range(1, rows + 1):
                row = {"id": str(i), "v": f"{label}{i} {filler}", "n": f"{i}.5"}
                fh.write(("," if i > 1 else "") + "\n        " + json.dumps(row))
            fh.write("\n      ]")
        summary = {"cluster_name": CLUSTER, "database": None, "schema_name": "public",
                   "table_name": "rp_stream", "nodes": ["n1", "n2"], "primary_key": ["id"],
                   "diff_rows": rows, "diff_rows_by_pair": {"n1/n2": rows}}
        fh.write('\n    }\n  },\n  "summary": ' + json.dumps(summary) + "\n}\n")


def test_a_big_diff_file_is_repaired_in_little_memory(table: Nodes, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    _write_big_diff(big, BIG_ROWS)
    size_mb = big.stat().st_size / 2**20
    assert size_mb > 50
    before = table.snapshots(TABLE)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(Path(sys.executable).parent / "ace"),
                           "table-repair", CLUSTER, TABLE, f"--diff-file={big}",
                           "--source-of-truth=n1", "--dry-run"], capture_output=True,
                          text=True, env={**os.environ, "ACE_NO_PROGRESS": "1"}, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "159950" in done.stdout.replace(",", ""), done.stdout
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    # json.load of this file alone takes several times its size; streaming stays small and fixed
    assert peak_mb < 150, f"peak {peak_mb:.0f} MB for a {size_mb:.0f} MB diff file"
    assert table.snapshots(TABLE) == before


# Runs one command as the only child of a fresh process and prints the child's peak RSS (KiB).
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def test_a_front_door_checks_the_summary_and_the_work_checks_the_rows(table: Nodes,
                                                                     tmp_path: Path) -> None:
    """A request is checked from the summary alone; a broken row fails the work itself."""
    path, _ = diff_table(TABLE, nodes="n1,n2")
    broken = tmp_path / "broken.json"
    text = path.read_text()
    first_row = text.index('{"id"')
    broken.write_text(text[:first_row] + '{"id": "3", "v": ' + text[first_row + 1:])
    raw = {"cluster_name": CLUSTER, "table_name": TABLE, "diff_file": str(broken),
           "source_of_truth": "n1"}
    settings = load_settings()
    assert validate_repair_request(raw, settings).diff_file == str(broken)
    with pytest.raises(DiffFileError, match="not valid JSON"):
        run_table_repair(raw, settings, new_task_id("table-repair"))
    wrong = {**raw, "table_name": "public.other"}
    with pytest.raises(DiffFileError, match="is for table public.rp_stream"):
        validate_repair_request(wrong, settings)


class _Side:
    """A stand-in view for the writer: given rows for one pair, in order."""

    def __init__(self, left: list[dict[str, Any]], right: list[dict[str, Any]]) -> None:
        self.sides = {"n1": left, "n2": right}

    def pairs(self) -> list[tuple[str, str, int]]:
        return [("n1", "n2", max(len(self.sides["n1"]), len(self.sides["n2"])))]

    def side_rows(self, left: str, right: str, side: str) -> Any:
        return (json.dumps(r, ensure_ascii=False) for r in self.sides[side])


TEXT = st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs",)),
                                    max_size=40))


@examples(max_examples=40, deadline=None)
@given(st.lists(st.fixed_dictionaries({"v": TEXT, "w": TEXT}), max_size=30),
       st.integers(min_value=1, max_value=64))
def test_rows_come_back_exactly_whatever_the_read_size(values: list[dict[str, Any]],
                                                       read_chars: int) -> None:
    """Rows cut anywhere by the reading window still come back value for value."""
    import tempfile

    rows = [{"id": str(i), **v} for i, v in enumerate(values)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.json"
        write_diff_json(path, _Side(rows, rows[::2]), {"nodes": ["n1", "n2"], "x": 1.5})
        saved = fmt.READ_CHARS
        fmt.READ_CHARS = read_chars
        try:
            layout = fmt.Layout(texts=True)
            got = list(fmt.read_rows(path, layout))
        finally:
            fmt.READ_CHARS = saved
    assert [(n, r) for _, n, r, _ in got] == [("n1", r) for r in rows] + \
        [("n2", r) for r in rows[::2]]
    assert all(json.loads(t) == r for _, _, r, t in got if t is not None)
    assert layout.summary == {"nodes": ["n1", "n2"], "x": 1.5}


def test_numbers_cut_by_the_reading_window_keep_their_digits(tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    path = tmp_path / "orig.json"
    path.write_text('{"n1/n2": {"n1": [{"id": 12345, "f": 1.2500e-3, "x": -Infinity}], '
                    '"n2": [{"id": 678901, "f": 10, "x": true}]}}')
    expected = [("n1", {"id": "12345", "f": "1.2500e-3", "x": "-Infinity"}),
                ("n2", {"id": "678901", "f": "10", "x": "true"})]
    for size in range(1, 24):
        monkeypatch.setattr(fmt, "READ_CHARS", size)
        assert [(n, r) for _, n, r, _ in fmt.read_rows(path)] == expected, size
