"""The HTML pages of schema-diff and spock-diff, rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import CLUSTER, NODES, execute, on_every_node, run_ace
from reports_helpers import chromium, parse_html
from schema_fixtures import BASE, ON_N2, ON_N3, SCHEMA
from spock_fixtures import drop_spock, install_spock_mesh, run_sql

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _report(stdout: str) -> Path:
    found = re.search(r"^Report written to (.+\.html)$", stdout, re.M)
    assert found, stdout
    return Path(found.group(1))


def test_schema_diff_page(pg_cluster: Any, tmp_path: Path) -> None:
    on_every_node(pg_cluster, BASE)
    execute(pg_cluster.node_dsn(1), ON_N2)
    execute(pg_cluster.node_dsn(2), ON_N3)
    try:
        run = run_ace("schema-diff", CLUSTER, SCHEMA, "--output=html")
    finally:
        on_every_node(pg_cluster, [f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"])
    assert run.code == 1
    report = _report(run.stdout)
    assert report.with_suffix(".json").is_file()
    page = parse_html(chromium(["--dump-dom", report.as_uri()], tmp_path / "p").stdout)
    assert "The nodes differ." in page.one("div", "banner").text()
    sections = page.find_all("section", "pair")
    assert [s.find_all("span", "tag")[0].text() + "/" + s.find_all("span", "tag")[1].text()
            for s in sections] == ["n1/n2", "n1/n3", "n2/n3"]
    absent = [td.text() for td in sections[1].find_all("td", "absent")]
    assert absent == ["missing on n3"]
    rows = [tr.text() for tr in sections[0].find_all("tr")]
    assert any("f(x text)" in r and "volatility" in r and "immutable" in r for r in rows)


def test_spock_diff_page(pg_cluster: Any, tmp_path: Path) -> None:
    on_every_node(pg_cluster, ["DROP TABLE IF EXISTS \"<b>odd\"",
                               "CREATE TABLE \"<b>odd\" (id int PRIMARY KEY)"])
    dsns = [pg_cluster.node_dsn(i) for i in range(3)]
    install_spock_mesh(dsns, NODES, ['public."<b>odd"'])
    run_sql(dsns[2], "UPDATE spock.subscription SET sub_enabled = false"
                     " WHERE sub_name = 'sub_n3_n1'")
    try:
        run = run_ace("spock-diff", CLUSTER, "--output=html")
    finally:
        for dsn in dsns:
            drop_spock(dsn)
        on_every_node(pg_cluster, ["DROP TABLE IF EXISTS \"<b>odd\""])
    assert run.code == 1
    dom = chromium(["--dump-dom", _report(run.stdout).as_uri()], tmp_path / "p").stdout
    page = parse_html(dom)
    assert "<b>odd" not in dom.replace("&lt;b&gt;odd", "")
    titles = [h.text() for h in page.find_all("h2")]
    assert "n1: spock node n1" in titles
    rows = [tr.text() for tr in page.find_all("tr")]
    assert any("sub_n3_n1" in r and "disabled" in r for r in rows)


def test_repset_diff_page(pg_cluster: Any, tmp_path: Path) -> None:
    on_every_node(pg_cluster, ["DROP TABLE IF EXISTS hp_a, hp_b",
                               "CREATE TABLE hp_a (id int PRIMARY KEY, v text)",
                               "INSERT INTO hp_a VALUES (1, 'x'), (2, 'y')",
                               "CREATE TABLE hp_b (v text)"])
    execute(pg_cluster.node_dsn(1), ["UPDATE hp_a SET v = 'z' WHERE id = 2"])
    dsns = [pg_cluster.node_dsn(i) for i in range(3)]
    install_spock_mesh(dsns, NODES, ["public.hp_a", "public.hp_b"])
    try:
        run = run_ace("repset-diff", CLUSTER, "default", "--output=html")
    finally:
        for dsn in dsns:
            drop_spock(dsn)
        on_every_node(pg_cluster, ["DROP TABLE IF EXISTS hp_a, hp_b"])
    assert run.code == 2
    page = parse_html(chromium(["--dump-dom", _report(run.stdout).as_uri()],
                               tmp_path / "p").stdout)
    rows = {tr.find_all("td")[0].text(): tr for tr in page.find_all("tr", "differs")
            + page.find_all("tr", "failed")}
    assert set(rows) == {"public.hp_a", "public.hp_b"}
    assert "n1/n2: 1 row" in rows["public.hp_a"].text() and "1 rows" not in rows["public.hp_a"].text()
    assert "primary key" in rows["public.hp_b"].text().lower()
