"""The CSV and HTML reports of a table diff, as a person opening them would find them."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from reports_helpers import CHROMIUM, Element, chromium, parse_html, partials_view

from ace_shared.diff.partials import PartialsView
from ace_shared.difffile.csvreport import decode_field, encode_field
from ace_shared.difffile.reports import write_report
from ace_shared.difffile.view import PairRow

NODES = ["n1", "n2", "n3"]
COLUMNS = [("id", "integer"), ("name", "text"), ("note", "text"), ("amount", "numeric(10,2)")]
LONG = "lorem ipsum " * 30 + "THE END"


def row(i: int, name: str = "ann", note: str | None = "x", amount: str = "1.00") -> dict[str, Any]:
    return {"id": str(i), "name": name, "note": note, "amount": amount}


def summary(**extra: Any) -> dict[str, Any]:
    base = {"cluster_name": "testclus", "database": "acedb", "table": "public.people",
            "nodes": NODES, "primary_key": ["id"], "total_rows_checked": 1234,
            "start_time": "2024-05-01T10:00:00+00:00", "end_time": "2024-05-01T10:00:03+00:00",
            "time_taken": 3.0, "diff_partial": False, "diff_file": "/out/diffs_1.json"}
    base.update(extra)
    return base


@pytest.fixture
def view(tmp_path: Path) -> PartialsView:
    """Key 1: NULL on n1/n3 vs '' on n2; key 2: missing on n2; key 3: name changed on n3
    (with a script tag on n1/n2); key 4: a long value differing at its end on n2."""
    records = [
        {"n1": row(1, note=None), "n2": row(1, note=""), "n3": row(1, note=None)},
        {"n1": row(2, "bob"), "n2": None, "n3": row(2, "bob")},
        {"n1": row(3, "<script>alert(1)</script>"), "n2": row(3, "<script>alert(1)</script>"),
         "n3": row(3, "carol", amount="2.50")},
        {"n1": row(4, note=LONG), "n2": row(4, note=LONG + "!"), "n3": row(4, note=LONG)},
    ]
    return partials_view(tmp_path, NODES, COLUMNS, ["id"], [records[:2], records[2:]])


def render_html(tmp_path: Path, view: Any, **summary_extra: Any) -> tuple[str, Element]:
    path = tmp_path / "report.html"
    write_report(path, view, summary(**summary_extra), "html")
    text = path.read_text(encoding="utf-8")
    return text, parse_html(text)


def section(page: Element, pair: str) -> Element:
    return page.one("section", "pair", data_pair=pair)


def line(sec: Element, key: str) -> Element:
    return sec.one("details", "line", data_key=f'["{key}"]')


def grid_cell(ln: Element, col: str) -> Element:
    return ln.one("summary").one("div", "cell", data_col=col)


# ----- CSV --------------------------------------------------------------------------------


def read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_csv_has_two_lines_per_differing_key_with_statuses(tmp_path: Path,
                                                           view: PartialsView) -> None:
    path = tmp_path / "d.csv"
    write_report(path, view, summary(), "csv")
    lines = read_csv(path)
    assert lines[0] == ["pair", "node", "status", "id", "name", "note", "amount", "commit_ts",
                        "origin"]
    n1n2 = [ln for ln in lines[1:] if ln[0] == "n1/n2"]
    assert [ln[1:4] for ln in n1n2] == [
        ["n1", "different", "1"], ["n2", "different", "1"],
        ["n1", "only here", "2"], ["n2", "missing", "2"],
        ["n1", "different", "4"], ["n2", "different", "4"],
    ]
    missing = n1n2[3]
    assert missing[4:] == ["", "", "", "", ""], "a missing row carries only its key"
    only_here = n1n2[2]
    assert only_here[3:] == ["2", "bob", "x", "1.00", "\\N", "\\N"]  # (no provenance here)
    n1n3 = [ln for ln in lines[1:] if ln[0] == "n1/n3"]
    assert n1n3 == [["n1/n3", "n1", "different", "3", "<script>alert(1)</script>", "x", "1.00",
                     "\\N", "\\N"],
                    ["n1/n3", "n3", "different", "3", "carol", "x", "2.50", "\\N", "\\N"]]
    assert {ln[0] for ln in lines[1:]} == {"n1/n2", "n1/n3", "n2/n3"}
    assert len(lines) == 1 + 2 * (3 + 1 + 4)
    assert path.read_bytes().count(b"\r\n") == len(lines)


def test_csv_tells_null_from_empty_string(tmp_path: Path, view: PartialsView) -> None:
    path = tmp_path / "d.csv"
    write_report(path, view, summary(), "csv")
    first_pair = [ln for ln in read_csv(path) if ln[0] == "n1/n2"]
    n1_note, n2_note = first_pair[0][5], first_pair[1][5]
    assert n1_note == "\\N" and decode_field(n1_note) is None
    assert n2_note == "" and decode_field(n2_note) == ""


@pytest.mark.parametrize("value", [None, "", "\\N", "\\\\N", "N", "a\\N", "x,\"y\"\n z", "NULL"])
def test_csv_field_encoding_is_lossless(value: str | None) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerow(["a", encode_field(value)])
    field = next(csv.reader(io.StringIO(buf.getvalue())))[1]
    assert decode_field(field) == value


def test_csv_text_that_looks_like_the_null_marker_is_not_null(tmp_path: Path) -> None:
    v = partials_view(tmp_path, ["n1", "n2"], COLUMNS, ["id"],
                      [[{"n1": row(1, note="\\N"), "n2": row(1, note=None)}]])
    path = tmp_path / "d.csv"
    write_report(path, v, summary(nodes=["n1", "n2"]), "csv")
    lines = read_csv(path)
    assert [ln[5] for ln in lines[1:]] == ["\\\\N", "\\N"]
    assert [decode_field(ln[5]) for ln in lines[1:]] == ["\\N", None]


class FailingView:
    """A view whose rows break off half-way, as a disk or database failure would."""

    def __init__(self, inner: PartialsView) -> None:
        self.inner = inner
        self.nodes, self.columns, self.key = inner.nodes, inner.columns, inner.key

    def pairs(self) -> list[tuple[str, str, int]]:
        return self.inner.pairs()

    def pair_rows(self, left: str, right: str) -> Iterator[PairRow]:
        rows = self.inner.pair_rows(left, right)
        yield next(rows)
        raise OSError("read failed")


@pytest.mark.parametrize("fmt", ["csv", "html"])
def test_a_failed_write_leaves_no_report_and_no_temp_file(tmp_path: Path, view: PartialsView,
                                                          fmt: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="read failed"):
        write_report(out / f"d.{fmt}", FailingView(view), summary(), fmt)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "html"])
def test_a_failed_rewrite_keeps_the_previous_report(tmp_path: Path, view: PartialsView,
                                                    fmt: str) -> None:
    path = tmp_path / f"d.{fmt}"
    write_report(path, view, summary(), fmt)
    before = path.read_bytes()
    with pytest.raises(OSError):
        write_report(path, FailingView(view), summary(), fmt)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ----- HTML -------------------------------------------------------------------------------


def test_html_has_one_section_per_differing_pair_with_its_count(tmp_path: Path,
                                                                view: PartialsView) -> None:
    _, page = render_html(tmp_path, view)
    sections = page.find_all("section", "pair")
    assert [s.attrs["data-pair"] for s in sections] == ["n1/n2", "n1/n3", "n2/n3"]
    assert "3 differing rows" in section(page, "n1/n2").one("h2").text()
    assert "1 differing row" in section(page, "n1/n3").one("h2").text()
    assert len(section(page, "n2/n3").find_all("details", "line")) == 4
    pair_table = page.one("table", "pairs").text()
    assert "n1 / n3" in pair_table and "n1 / n2" in pair_table


def test_html_shows_null_and_empty_string_differently(tmp_path: Path,
                                                      view: PartialsView) -> None:
    _, page = render_html(tmp_path, view)
    cell = grid_cell(line(section(page, "n1/n2"), "1"), "note")
    assert "changed" in cell.classes
    left, right = cell.find_all("span", "v")
    assert left.find_all("span", "null") and not left.find_all("span", "empty")
    assert right.find_all("span", "empty") and not right.find_all("span", "null")
    full = line(section(page, "n1/n2"), "1").one("table", "sides")
    note_row = full.one("tr", data_col="note")
    n1_cell, n2_cell = note_row.find_all("td")
    assert n1_cell.find_all("span", "null") and n2_cell.find_all("span", "empty")


def test_html_marks_the_row_missing_on_one_node(tmp_path: Path, view: PartialsView) -> None:
    _, page = render_html(tmp_path, view)
    ln = line(section(page, "n1/n2"), "2")
    assert "missing" in ln.classes and ln.attrs["data-missing-on"] == "n2"
    assert ln.one("span", "badge").text() == "missing on n2"
    assert grid_cell(ln, "name").text() == "bob"
    absent = ln.find_all("td", "absent")
    assert len(absent) == len(COLUMNS) and all(td.text() == "no row on n2" for td in absent)
    reverse = line(section(page, "n2/n3"), "2")
    assert reverse.attrs["data-missing-on"] == "n2"
    for key in ("1", "3", "4"):
        assert "missing" not in line(section(page, "n2/n3"), key).classes


def test_html_marks_only_the_changed_cells(tmp_path: Path, view: PartialsView) -> None:
    _, page = render_html(tmp_path, view)
    ln = line(section(page, "n1/n3"), "3")
    assert "changed" in grid_cell(ln, "name").classes
    assert "changed" in grid_cell(ln, "amount").classes
    assert "same" in grid_cell(ln, "note").classes
    assert "key" in grid_cell(ln, "id").classes
    assert grid_cell(ln, "amount").text() == "n11.00n32.50"
    assert "name, amount" in ln.one("div", "status").text()
    full_rows = {tr.attrs["data-col"]: tr.classes for tr in ln.one("table", "sides").find_all("tr")
                 if "data-col" in tr.attrs}
    assert full_rows == {"id": {"key"}, "name": {"changed"}, "note": set(),
                         "amount": {"changed"}}


def test_html_escapes_every_value(tmp_path: Path, view: PartialsView) -> None:
    text, page = render_html(tmp_path, view, table="public.<b>people</b>",
                             partial_reason="<img src=x onerror=alert(2)>", diff_partial=True)
    assert "<script>alert" not in text and "<img" not in text and "<b>people" not in text
    scripts = page.find_all("script")
    assert scripts and not any("alert" in s.text() for s in scripts)
    ln = line(section(page, "n1/n3"), "3")
    assert "<script>alert(1)</script>" in grid_cell(ln, "name").text()
    assert "public.<b>people</b>" in page.one("h1").text()


def test_html_cuts_long_values_in_the_grid_but_not_in_the_details(tmp_path: Path,
                                                                   view: PartialsView) -> None:
    _, page = render_html(tmp_path, view)
    ln = line(section(page, "n1/n2"), "4")
    grid_text = grid_cell(ln, "note").text()
    assert LONG not in grid_text and "\u2026" in grid_text
    full = ln.one("table", "sides").one("tr", data_col="note").find_all("td")
    assert [td.text() for td in full] == [LONG, LONG + "!"]


def test_html_partial_banner_only_when_the_diff_is_partial(tmp_path: Path,
                                                           view: PartialsView) -> None:
    reason = "Stopped after finding 4 differing rows, at or over MAX_ALLOWED_DIFFS (4)."
    _, page = render_html(tmp_path, view, diff_partial=True, partial_reason=reason)
    banner = page.one("div", "partial")
    assert "Partial diff." in banner.text() and reason in banner.text()
    _, page = render_html(tmp_path, view)
    assert page.find_all("div", "partial") == []
    assert page.find_all("div", "match") == []
    assert "The nodes differ." in page.one("div", "mismatch").text()


def test_html_says_so_when_the_nodes_match(tmp_path: Path) -> None:
    empty = partials_view(tmp_path, NODES, COLUMNS, ["id"], [[]])
    _, page = render_html(tmp_path, empty, diff_rows=0)
    assert "All nodes match." in page.one("div", "match").text()
    assert page.find_all("section", "pair") == []
    assert page.find_all("div", "mismatch") == []
    same = [tr.text() for tr in page.one("table", "pairs").find_all("tr", "same")]
    assert same == ["n1 / n20 (match)", "n1 / n30 (match)", "n2 / n30 (match)"]


def test_html_summary_shows_what_was_checked(tmp_path: Path, view: PartialsView) -> None:
    _, page = render_html(tmp_path, view, table_filter="id > 0")
    facts = page.one("dl", "facts")
    pairs = dict(zip([dt.text() for dt in facts.find_all("dt")],
                     [dd.text() for dd in facts.find_all("dd")], strict=True))
    assert pairs["Cluster"] == "testclus" and pairs["Table"] == "public.people"
    assert pairs["Nodes"] == "n1, n2, n3" and pairs["Rows checked"] == "1,234"
    assert pairs["Started"] == "2024-05-01 10:00:00 UTC" and pairs["Row filter"] == "id > 0"


def test_html_shows_key_columns_first(tmp_path: Path) -> None:
    cols = [("note", "text"), ("region", "text"), ("id", "integer")]
    v = partials_view(tmp_path, ["n1", "n2"], cols, ["region", "id"],
                      [[{"n1": {"note": "a", "region": "eu", "id": "1"},
                         "n2": {"note": "b", "region": "eu", "id": "1"}}]])
    _, page = render_html(tmp_path, v, nodes=["n1", "n2"])
    head = page.one("div", "grid-head").find_all("div", where=lambda e: "title" in e.attrs)
    assert [(d.attrs["title"], "key" in d.classes) for d in head] == [
        ("region", True), ("id", True), ("note", False)]
    ln = page.one("details", "line")
    assert ln.attrs["data-key"] == '["eu", "1"]'
    cells = ln.one("summary").find_all("div", "cell")
    assert [c.attrs["data-col"] for c in cells] == ["region", "id", "note"]


def test_html_caps_rows_per_pair_and_says_where_the_rest_are(tmp_path: Path,
                                                              view: PartialsView) -> None:
    path = tmp_path / "r.html"
    from ace_shared.difffile.htmlreport import write_html
    write_html(path, view, summary(), max_rows_per_pair=2)
    page = parse_html(path.read_text(encoding="utf-8"))
    sec = section(page, "n2/n3")
    assert len(sec.find_all("details", "line")) == 2
    note = sec.one("p", "note").text()
    assert "first 2 of 4" in note and "/out/diffs_1.json" in note
    assert section(page, "n1/n3").find_all("p", "note") == []


# ----- end to end: a real diff, opened in a real browser ------------------------------------

TABLE = "reports_e2e"


def make_divergent_table(pg_cluster: Any) -> None:
    """20 equal rows everywhere, then: id 5 deleted on n2, id 7 renamed on n3,
    id 9's note NULL on n1 and n2 but '' on n3."""
    for i in range(3):
        with psycopg2.connect(pg_cluster.node_dsn(i)) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS public.reports_e2e")
            cur.execute("CREATE TABLE public.reports_e2e (id int PRIMARY KEY, name text, note text,"
                        " amount numeric(10,2))")
            cur.execute("INSERT INTO public.reports_e2e SELECT g, 'name ' || g, 'note', g * 1.5 "
                        "FROM generate_series(1, 20) g")
            if i == 1:
                cur.execute("DELETE FROM public.reports_e2e WHERE id = 5")
            if i == 2:
                cur.execute("UPDATE public.reports_e2e SET name = 'renamed <b>' WHERE id = 7")
            cur.execute("UPDATE public.reports_e2e SET note = %s WHERE id = 9",
                        ("" if i == 2 else None,))
        conn.close()


DRIVER = """<script>
document.querySelector('section[data-pair="n1/n3"] button[data-act="expand"]').click();
var f = document.querySelector('section[data-pair="n2/n3"] input.filter');
f.value = 'RENAMED'; f.dispatchEvent(new Event('input', {bubbles: true}));
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_report_of_a_real_diff_in_a_browser(pg_cluster: Any, tmp_path: Path) -> None:
    make_divergent_table(pg_cluster)
    ace = Path(sys.executable).parent / "ace"
    done = subprocess.run([str(ace), "table-diff", pg_cluster.name, f"public.{TABLE}",
                           "--output", "html"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    found = re.search(r"^Report written to (.+\.html)$", done.stdout, re.M)
    assert found, done.stdout
    report = Path(found.group(1))
    assert report.is_file()
    diff_file = re.search(r"^Diffs written to (.+\.json)$", done.stdout, re.M)
    assert diff_file and Path(diff_file.group(1)).with_suffix(".html") == report

    dom = chromium(["--dump-dom", report.as_uri()], tmp_path / "profile").stdout
    page = parse_html(dom)
    assert "js" in page.one("html").classes, "the page's script did not run"
    assert [s.attrs["data-pair"] for s in page.find_all("section", "pair")] == [
        "n1/n2", "n1/n3", "n2/n3"]

    gone = line(section(page, "n1/n2"), "5")
    assert gone.attrs["data-missing-on"] == "n2"
    assert gone.one("span", "badge").text() == "missing on n2"
    assert len(section(page, "n1/n2").find_all("details", "line")) == 1

    renamed = grid_cell(line(section(page, "n1/n3"), "7"), "name")
    assert "changed" in renamed.classes
    assert renamed.text() == "n1name 7n3renamed <b>"

    note = grid_cell(line(section(page, "n2/n3"), "9"), "note")
    assert "changed" in note.classes
    n2_side, n3_side = note.find_all("span", "v")
    assert n2_side.one("span", "null").text() == "NULL"
    assert n3_side.one("span", "empty").text() == "empty"
    assert page.find_all("div", "partial") == []

    # The page's own buttons and filter, used as a reader would: expand one pair's lines and
    # filter another's. A copy of the report gets a few lines that click and type.
    driven = tmp_path / "driven.html"
    driven.write_text(report.read_text(encoding="utf-8").replace("</body>", DRIVER + "</body>"),
                      encoding="utf-8")
    page = parse_html(chromium(["--dump-dom", driven.as_uri()], tmp_path / "profile").stdout)
    assert all("open" in d.attrs for d in section(page, "n1/n3").find_all("details", "line"))
    assert not any("open" in d.attrs for d in section(page, "n1/n2").find_all("details", "line"))
    shown = [d.attrs["data-key"] for d in section(page, "n2/n3").find_all("details", "line")
             if "hidden" not in d.attrs]
    assert shown == ['["7"]']
    assert section(page, "n2/n3").one("span", "shown").text() == "1 shown"

    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1400,1000", report.as_uri()],
             tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("ACE_TEST_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "reports_e2e.png")
