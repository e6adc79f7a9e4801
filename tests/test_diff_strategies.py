"""Narrowing and one-pass streaming write the same diff file, byte for byte.

A range that differs in most of its sub-ranges is compared in one pass (every
node streams each row's key and hash); one that differs in a few is narrowed.
Which one ran must not show in the file: each table here is diffed with each
strategy forced (the job's ``DiffTuning.strategy``) and with the default choice, and the
files are compared byte for byte once the job's own id and times are removed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import (
    LABELS,
    NODES,
    diff_in_process,
    enum_keyed_table,
    execute,
    on_every_node,
    pair_rows,
)
from type_cases import CASES, ENUM_DDL, TABLE_DDL

from ace_shared.diff.tuning import DensityHints, DiffTuning, Strategy

STRATEGIES = ("narrow", "stream", "auto")
# what differs from one run to the next of the same diff
VOLATILE = ("task_id", "start_time", "end_time", "time_taken", "diff_file", "report_file")


def stable_text(path: Path) -> str:
    """The diff file's text with the job's id, times and file name taken out of the summary."""
    text = path.read_text(encoding="utf-8")
    head, sep, _ = text.partition('\n  "summary": ')
    assert sep, "the diff file has no summary"
    summary = json.loads(text)["summary"]
    for key in VOLATILE:
        summary.pop(key, None)
    return head + sep + json.dumps(summary, ensure_ascii=False, sort_keys=True)


DEFAULTS = DiffTuning()  # what users get


def diff_with(strategy: str, table: str, tuning: DiffTuning = DEFAULTS,
              hints: DensityHints | None = None, **options: Any) -> tuple[str, dict[str, Any]]:
    path, diff = diff_in_process(table, tuning=replace(tuning, strategy=Strategy(strategy)),
                                 hints=hints, **options)
    return stable_text(path), diff


def same_file_every_way(table: str, tuning: DiffTuning = DEFAULTS,
                        **options: Any) -> dict[str, Any]:
    """Diff ``table`` with every strategy; assert one file; return its data."""
    texts = {}
    diff: dict[str, Any] = {}
    for strategy in STRATEGIES:
        texts[strategy], diff = diff_with(strategy, table, tuning, **options)
    assert texts["stream"] == texts["narrow"], "one pass and narrowing wrote different files"
    assert texts["auto"] == texts["narrow"], "the default choice wrote a different file"
    return diff


# ----- keys COPY has to escape, composite and mixed-case ------------------------------------

SPECIAL = ["tab\there", "new\nline", "back\\slash", 'quo"te', "it's", "ünïcødé", "sp ace", "",
           "\\N", "cr\rx"]
MIXED_ROWS = 12_000


@pytest.fixture(scope="module")
def mixed_table(pg_cluster: Any) -> Any:
    """``"Td Mixed"`` keyed by ("Region" text, "Id" int), 2% of its rows changed on n2/n3."""
    on_every_node(pg_cluster, [
        'DROP TABLE IF EXISTS "Td Mixed"',
        'CREATE TABLE "Td Mixed" ("Region" text COLLATE "C", "Id" int, "Amount" numeric, '
        'ts timestamptz, f float8, doc jsonb, b bytea, note text, '
        'PRIMARY KEY ("Region", "Id"))',
        ('INSERT INTO "Td Mixed" SELECT (%s::text[])[1 + mod(g, 10)], g, g * 0.25, '
         "timestamptz '2024-01-01 00:00+00' + g * interval '1 minute', g / 3.0, "
         "jsonb_build_object('g', g), decode(md5(g::text), 'hex'), "
         "CASE WHEN mod(g, 7) = 0 THEN NULL WHEN mod(g, 7) = 1 THEN '' ELSE 'n' || g END "
         f"FROM generate_series(1, {MIXED_ROWS}) g", (SPECIAL,)),
    ])
    execute(pg_cluster.node_dsn(1), [
        'UPDATE "Td Mixed" SET note = CASE WHEN note IS NULL THEN \'\' ELSE NULL END '
        'WHERE mod("Id", 97) = 3',
        'UPDATE "Td Mixed" SET f = f + 1e-12 WHERE mod("Id", 131) = 5',
        'DELETE FROM "Td Mixed" WHERE mod("Id", 211) = 7',
    ])
    execute(pg_cluster.node_dsn(2), [
        'UPDATE "Td Mixed" SET ts = ts + interval \'1 microsecond\' WHERE mod("Id", 89) = 11',
        'UPDATE "Td Mixed" SET b = b || \'\\x00\'::bytea WHERE mod("Id", 173) = 13',
        ('INSERT INTO "Td Mixed" ("Region", "Id", note) '
         "SELECT (%s::text[])[1 + mod(g, 10)], -g, 'extra' FROM generate_series(1, 40) g",
         (SPECIAL,)),
    ])
    # every node's estimate settled now: an autovacuum ANALYZE between two of the diffs
    # compared would change which node plans and so the ranges (the summary's count)
    on_every_node(pg_cluster, ['ANALYZE "Td Mixed"'])
    return pg_cluster


@pytest.mark.parametrize(("block_rows", "leaf_rows"), [
    (1000, None),
    (10_000, None),
    (100_000, 40),  # one range, narrowed level after level down to small leaves
])
def test_escaped_composite_keys_give_one_file_every_way(
        mixed_table: Any, block_rows: int, leaf_rows: int | None) -> None:
    tuning = DiffTuning(leaf_rows=leaf_rows) if leaf_rows else DiffTuning()
    diff = same_file_every_way('public."Td Mixed"', tuning, block_rows=block_rows)
    keys = {(r["Region"], r["Id"]) for r in pair_rows(diff, "n2/n3", "n3")}
    assert (SPECIAL[0], "-10") in keys  # n3's extra row -10: mod 10 = 0, the first label
    assert {region for region, _ in keys} == set(SPECIAL), "every escaped key came back"
    assert diff["summary"]["total_rows_checked"] == MIXED_ROWS + 40


def test_one_pass_reports_exactly_the_changed_keys(
        mixed_table: Any) -> None:
    _, diff = diff_with("stream", 'public."Td Mixed"', block_rows=1000)
    ids = range(1, MIXED_ROWS + 1)
    n2 = {i for i in ids if i % 97 == 3 or i % 131 == 5 or i % 211 == 7}
    n3 = {i for i in ids if i % 89 == 11 or i % 173 == 13} | {-g for g in range(1, 41)}
    got = {pair: {int(r["Id"]) for rows in sides.values() for r in rows}
           for pair, sides in diff["diffs"].items()}
    assert got == {"n1/n2": n2, "n1/n3": n3, "n2/n3": n2 | n3}
    assert diff["summary"]["diff_rows"] == len(n2 | n3)


# ----- the type matrix through the one-pass path ------------------------------------------

@pytest.fixture(scope="module")
def types_table(pg_cluster: Any) -> str:
    for i in range(len(NODES)):
        dsn = pg_cluster.node_dsn(i)
        execute(dsn, ["DROP TABLE IF EXISTS td_types_s", "DROP TYPE IF EXISTS td_mood_s"])
        for stmt in ENUM_DDL[i]:
            execute(dsn, [stmt.replace("td_mood", "td_mood_s")])
        inserts = [
            f"INSERT INTO td_types_s (id, {case.column}) VALUES ({n}, {case.values[i]})"  # noqa: S608
            for n, case in enumerate(CASES, start=1)
        ]
        ddl = TABLE_DDL.replace("td_types", "td_types_s").replace("td_mood", "td_mood_s")
        execute(dsn, [ddl, *inserts])
    return "public.td_types_s"


def test_type_matrix_through_one_pass(types_table: str) -> None:
    diff = same_file_every_way(types_table, block_rows=1000)
    for n, case in enumerate(CASES, start=1):
        for a, b in itertools.combinations(NODES, 2):
            sides = diff["diffs"].get(f"{a}/{b}", {})
            reported = any(r["id"] == str(n) for rows in sides.values() for r in rows)
            assert reported == case.differs(a, b), (case.name, a, b)


# ----- keys that sort differently, or are spelt differently, on some node -------------------

def test_enum_keys_sorting_differently_give_one_file(pg_cluster: Any) -> None:
    enum_keyed_table(pg_cluster, "td_enumkey_s", [LABELS, LABELS[::-1], LABELS[::-1]])
    diff = same_file_every_way("public.td_enumkey_s", block_rows=1000)
    assert [(r["k"], r["i"]) for r in pair_rows(diff, "n1/n2", "n1")] == [
        ("b", "3001"), ("f", "5"), ("f", "5999")]


def test_bytea_and_equal_but_differently_spelt_keys(pg_cluster: Any) -> None:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_bkey",
        "CREATE TABLE td_bkey (k bytea PRIMARY KEY, n numeric UNIQUE, v text)",
        "INSERT INTO td_bkey SELECT decode(md5(g::text), 'hex') || '\\x00'::bytea, g, 'v' "
        "FROM generate_series(1, 5000) g",
        "DROP TABLE IF EXISTS td_nkey",
        "CREATE TABLE td_nkey (k numeric PRIMARY KEY, v text)",
        "INSERT INTO td_nkey SELECT g, 'v' FROM generate_series(1, 5000) g",
    ])
    execute(pg_cluster.node_dsn(1), [
        "UPDATE td_bkey SET v = 'w' WHERE mod(n, 50) = 0",
        "UPDATE td_nkey SET k = k::numeric(10, 2) WHERE mod(k, 40) = 0",
    ])
    bdiff = same_file_every_way("public.td_bkey", block_rows=1000)
    assert bdiff["summary"]["diff_rows"] == 100
    whole, _ = diff_with("narrow", "public.td_nkey", block_rows=1000)
    # rows fetched a few keys at a time: 40 and 40.00 must still land in one batch
    few = DiffTuning(fetch_keys=3)
    ndiff = same_file_every_way("public.td_nkey", few, block_rows=1000)
    assert diff_with("narrow", "public.td_nkey", few, block_rows=1000)[0] == whole
    # 40.00 on n2 is the same key as 40 elsewhere: one differing row, not two
    assert ndiff["summary"]["diff_rows"] == 125
    assert pair_rows(ndiff, "n1/n2", "n2")[0] == {"k": "40.00", "v": "v"}
    assert pair_rows(ndiff, "n1/n2", "n1")[0] == {"k": "40", "v": "v"}


# ----- the default choice on a table with 1% of its rows changed --------------------------

DENSE_ROWS = 100_000


@pytest.fixture(scope="module")
def dense_table(pg_cluster: Any) -> Any:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_dense",
        "CREATE TABLE td_dense (id bigint PRIMARY KEY, v text, x float8)",
        f"INSERT INTO td_dense SELECT 2 * g, 'row ' || g, g / 7.0 "
        f"FROM generate_series(1, {DENSE_ROWS}) g",
    ])
    # 1% of the keys, scattered over the whole key space
    execute(pg_cluster.node_dsn(1), [
        "UPDATE td_dense SET v = 'changed' WHERE mod(id / 2 * 7919, 200) = 1",
        "INSERT INTO td_dense SELECT 2 * g + 1, 'new', 0 FROM generate_series(1, "
        f"{DENSE_ROWS}, 400) g",
    ])
    execute(pg_cluster.node_dsn(2), ["DELETE FROM td_dense WHERE mod(id / 2 * 7919, 200) = 3"])
    on_every_node(pg_cluster, ["ANALYZE td_dense"])  # as for mixed_table
    return pg_cluster


def test_default_streams_a_range_that_differs_almost_everywhere(dense_table: Any) -> None:
    """At the default block size, 1% scattered changes touch every sub-range: the default
    must stream (no narrowing below the first pass) and write the narrowing's file."""
    def steps(hints: DensityHints, diff: dict[str, Any]) -> dict[str, int]:
        """How often the job's differs narrowed a range, or streamed one whole."""
        return {"narrow": 0, "whole": 0, **hints.steps(diff["summary"]["task_id"])}

    hints = DensityHints()
    narrowed, narrowed_diff = diff_with("narrow", "public.td_dense", hints=hints)
    calls = steps(hints, narrowed_diff)
    # the strategy the job carries is the one its differs follow
    assert calls["narrow"] > 0 and calls["whole"] == 0, "a forced narrowing streamed"
    hints = DensityHints()
    auto, diff = diff_with("auto", "public.td_dense", hints=hints)
    calls = steps(hints, diff)
    assert auto == narrowed
    assert calls["narrow"] == 0, "a range that differs everywhere was narrowed"
    assert calls["whole"] > 0, "no range was streamed without its first hash pass"
    summary = diff["summary"]
    assert summary["diff_rows"] == 2 * DENSE_ROWS // 200 + DENSE_ROWS // 400
    assert summary["total_rows_checked"] == DENSE_ROWS + DENSE_ROWS // 400


# ----- MAX_ALLOWED_DIFFS -----------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["stream", "auto"])
def test_one_pass_stops_early_like_narrowing(
        pg_cluster: Any, monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_budget_s",
        "CREATE TABLE td_budget_s (id int PRIMARY KEY, v int)",
        "INSERT INTO td_budget_s SELECT i, 0 FROM generate_series(1, 30000) i",
    ])
    execute(pg_cluster.node_dsn(1), ["UPDATE td_budget_s SET v = 1 WHERE id % 15 = 0"])
    monkeypatch.setenv("ACE_MAX_ALLOWED_DIFFS", "100")
    options = {"block_rows": 1000, "max_cpu_ratio": 0.1, "nodes": "n1,n2"}
    narrowed, _ = diff_with("narrow", "public.td_budget_s", **options)
    text, diff = diff_with(strategy, "public.td_budget_s", **options)
    assert text == narrowed
    summary = diff["summary"]
    assert summary["diff_partial"] is True
    assert "MAX_ALLOWED_DIFFS" in summary["partial_reason"]
    assert summary["ranges_checked"] < summary["ranges_total"]
    assert 100 <= summary["diff_rows"] < 2000
