"""Reports of awkward tables: columns named like the CSV's own, and tables too wide for a screen."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from reports_helpers import parse_html, partials_view

from ace_shared.difffile.reports import write_report

SUMMARY = {"cluster_name": "c", "table": "public.t", "nodes": ["n1", "n2"],
           "primary_key": ["id"]}


def test_csv_header_names_each_column_once_when_the_table_has_status_pair_node(
        tmp_path: Path) -> None:
    cols = [("id", "integer"), ("status", "text"), ("pair", "text"), ("node", "text")]
    v = partials_view(tmp_path, ["n1", "n2"], cols, ["id"],
                      [[{"n1": {"id": "1", "status": "open", "pair": "a", "node": "x"},
                         "n2": {"id": "1", "status": "shut", "pair": "a", "node": "x"}}]])
    path = tmp_path / "d.csv"
    write_report(path, v, SUMMARY, "csv")
    with open(path, encoding="utf-8", newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["ace_pair", "ace_node", "ace_status", "id", "status", "pair", "node",
                        "ace_commit_ts", "ace_origin"]
    assert len(set(lines[0])) == len(lines[0])
    assert lines[1:] == [["n1/n2", "n1", "different", "1", "open", "a", "x", "\\N", "\\N"],
                         ["n1/n2", "n2", "different", "1", "shut", "a", "x", "\\N", "\\N"]]


def test_csv_prefix_grows_when_the_table_has_ace_columns_too(tmp_path: Path) -> None:
    cols = [("id", "integer"), ("status", "text"), ("ace_status", "text")]
    v = partials_view(tmp_path, ["n1", "n2"], cols, ["id"],
                      [[{"n1": {"id": "1", "status": "a", "ace_status": "b"}, "n2": None}]])
    path = tmp_path / "d.csv"
    write_report(path, v, SUMMARY, "csv")
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header == ("ace__pair,ace__node,ace__status,id,status,ace_status,ace__commit_ts,"
                      "ace__origin")


CHROMIUM = shutil.which("chromium")
WIDE_COLUMNS = 80

# Measures, once the page has laid out, where each differing value of the first line sits.
PROBE = """<script>
var line = document.querySelector('details.line');
var out = [];
line.querySelectorAll('.delta .d').forEach(function (d) {
  d.querySelectorAll('.dv').forEach(function (v) {
    var r = v.getBoundingClientRect();
    out.push([d.getAttribute('data-delta-col'), v.textContent, Math.round(r.left),
              Math.round(r.right), r.width > 0 && r.height > 0 ? 1 : 0]);
  });
});
document.body.setAttribute('data-probe', JSON.stringify({width: window.innerWidth, seen: out}));
</script>"""


def _wide_row(i: int, changed: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": str(i)}
    row.update({f"col_{j:02d}": f"value {j} of row {i}" for j in range(WIDE_COLUMNS)})
    row.update(changed or {})
    return row


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_differing_values_of_a_wide_table_are_on_screen_without_scrolling(
        tmp_path: Path) -> None:
    cols = [("id", "integer")] + [(f"col_{j:02d}", "text") for j in range(WIDE_COLUMNS)]
    records = [{"n1": _wide_row(i), "n2": _wide_row(i, {"col_77": "far right", "col_40": None})}
               for i in range(1, 4)]
    v = partials_view(tmp_path, ["n1", "n2"], cols, ["id"], [records])
    report = tmp_path / "wide.html"
    write_report(report, v, SUMMARY, "html")
    driven = tmp_path / "probe.html"
    driven.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--dump-dom",
         driven.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout

    probe = json.loads(parse_html(dom).one("body").attrs["data-probe"])
    seen = {(col, text): (left, right, shown) for col, text, left, right, shown in probe["seen"]}
    assert set(seen) == {("col_40", "n1value 40 of row 1"), ("col_40", "n2NULL"),
                         ("col_77", "n1value 77 of row 1"), ("col_77", "n2far right")}
    for (col, text), (left, right, shown) in seen.items():
        assert shown and left >= 0 and right <= probe["width"], (col, text, left, right)
