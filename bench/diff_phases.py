"""Where a table diff spends its database time, by kind of query.

Runs one diff in this process (the same runner the CLI uses without a broker)
with every node connection's cursor timing each statement, and sorts the
statements into kinds by their SQL text: planning sample, range hashes, bucket
hashes and inner boundaries while narrowing, key+hash lines streamed by
``COPY`` (leaves and one-pass ranges), row fetches. Times
are summed over nodes and threads (database time, not wall time). It also
reports how evenly the planned ranges split the table, from the row counts the
range hashes return. "inner boundaries" is narrowing's cut of a range, and
also the exact plan of small tables; "sort keys in db order" is the planner's
check of its boundaries, and the ordering of differing keys.

Only bench code uses this; nothing in ACE is changed. If ACE's SQL changes
shape, unknown statements land in "other" rather than failing.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

# (kind, every fragment that must appear, fragments that must not); first match wins
KINDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("filter check (EXPLAIN)", ("EXPLAIN",), ()),
    ("stream: key+hash lines", ("COPY (",), ()),
    ("plan: sample keys", ("TABLESAMPLE",), ()),
    ("plan/shape: catalog", ("pg_",), ("bench",)),
    ("inner boundaries", ("row_number() OVER",), ()),
    ("narrow: bucket hashes", ("GROUP BY",), ()),
    ("range hash", ("count(*)",), ("ORDER BY",)),
    ("sort keys in db order", ("unnest", "SELECT ord"), ()),
    ("fetch differing rows", ("unnest", "ace_c0"), ()),
)
RANGE_HASH = "range hash"


def classify(statement: str) -> str:
    for kind, must, must_not in KINDS:
        if all(m in statement for m in must) and not any(m in statement for m in must_not):
            return kind
    return "other"


@dataclass
class KindTotals:
    calls: int = 0
    seconds: float = 0.0
    rows: int = 0


@dataclass
class PhaseReport:
    wall: float
    kinds: dict[str, KindTotals]
    range_rows: list[int] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, KindTotals] = defaultdict(KindTotals)
        self.first_node: tuple[str, int] | None = None
        self.range_rows: list[int] = []

    def add(self, kind: str, seconds: float, rows: list[tuple[Any, ...]] | None,
            node: tuple[str, int]) -> None:
        with self.lock:
            totals = self.kinds[kind]
            totals.calls += 1
            totals.seconds += seconds
            totals.rows += len(rows or [])
            if kind == RANGE_HASH and rows and node == self.first_node:
                self.range_rows.append(int(rows[0][0]))


def _timing_cursor(recorder: _Recorder) -> type[psycopg2.extensions.cursor]:
    class TimingCursor(psycopg2.extensions.cursor):
        """Times execute (the whole round trip: psycopg2 receives every row there)."""

        def execute(self, query: Any, vars: Any = None) -> None:  # noqa: A002 - psycopg2's name
            text = query if isinstance(query, str) else query.as_string(self)
            t0 = time.perf_counter()
            try:
                super().execute(query, vars)
            finally:
                self._ace_kind = classify(text)
                self._ace_elapsed = time.perf_counter() - t0
                self._ace_reported = False
                if self.description is None:
                    self._report(None)

        def _report(self, rows: list[tuple[Any, ...]] | None) -> None:
            if not getattr(self, "_ace_reported", True):
                self._ace_reported = True
                info = self.connection.info
                recorder.add(self._ace_kind, self._ace_elapsed, rows, (info.host, int(info.port)))

        def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
            """Times a ``COPY ... TO STDOUT`` (one-pass streams and leaves), lines counted."""
            text = sql.decode() if isinstance(sql, bytes) else str(sql)
            t0 = time.perf_counter()
            try:
                super().copy_expert(sql, file, size)
            finally:
                self._ace_kind = classify(text)
                self._ace_elapsed = time.perf_counter() - t0
                self._ace_reported = False
                self._report(list(getattr(file, "lines", [])))

        def fetchall(self) -> list[tuple[Any, ...]]:
            rows = super().fetchall()
            self._report(rows)
            return rows

        def fetchone(self) -> tuple[Any, ...] | None:
            row = super().fetchone()
            self._report([row] if row is not None else [])
            return row

    return TimingCursor


@contextmanager
def _timed_connections(recorder: _Recorder) -> Iterator[None]:
    """Every psycopg2 connection opened inside gets the timing cursor."""
    original = psycopg2.connect
    factory = _timing_cursor(recorder)

    def connect(*args: Any, **kwargs: Any) -> psycopg2.extensions.connection:
        kwargs.setdefault("cursor_factory", factory)
        return original(*args, **kwargs)

    psycopg2.connect = connect
    try:
        yield
    finally:
        psycopg2.connect = original


def profile_diff(cluster_dir: Path, cluster: str, table: str, first_node: tuple[str, int],
                 block_rows: int | None = None, max_cpu_ratio: str | None = None,
                 max_diffs: int = 10000) -> PhaseReport:
    """Run one diff in this process and return its database time by kind of query."""
    from ace_shared.config import load_settings
    from ace_shared.diff.local import run_table_diff
    from ace_shared.diff.request import validate_diff_request
    from ace_shared.tasks.ids import new_task_id

    recorder = _Recorder()
    recorder.first_node = first_node
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as out:
        settings = load_settings().with_overrides(
            CLUSTER_DIR=str(cluster_dir), OUTPUT_DIR=out, MAX_ALLOWED_DIFFS=max_diffs,
            BROKER_URL="")
        raw: dict[str, Any] = {"cluster_name": cluster, "table_name": table}
        if block_rows:
            raw["block_rows"] = block_rows
        if max_cpu_ratio:
            raw["max_cpu_ratio"] = max_cpu_ratio
        request = validate_diff_request(raw, settings)
        with _timed_connections(recorder):
            t0 = time.perf_counter()
            _, summary = run_table_diff(request, settings, new_task_id("table-diff"))
            wall = time.perf_counter() - t0
    return PhaseReport(wall, dict(recorder.kinds), recorder.range_rows, summary)


def print_phases(report: PhaseReport, label: str) -> None:
    total = sum(k.seconds for k in report.kinds.values()) or 1.0
    print(f"  database time by query kind ({label}; in-process run, wall "
          f"{report.wall:.2f}s; times summed over nodes and threads):")
    for kind, t in sorted(report.kinds.items(), key=lambda kv: -kv[1].seconds):
        print(f"    {kind:<26} {t.calls:>6} calls {t.seconds:>8.2f}s {100 * t.seconds / total:5.1f}%"
              f" {t.rows:>9} rows back")
    sizes = sorted(report.range_rows)
    if sizes:
        mean = statistics.mean(sizes)
        p90 = sizes[int(0.9 * (len(sizes) - 1))]
        holding = next(i for i in range(1, len(sizes) + 1)
                       if sum(sizes[-i:]) >= 0.9 * sum(sizes))
        print(f"  range balance (first node): {len(sizes)} ranges, rows per range min "
              f"{sizes[0]}, median {statistics.median(sizes):.0f}, p90 {p90}, max {sizes[-1]} "
              f"(max/mean {sizes[-1] / mean if mean else 0:.1f}); the largest {holding} "
              "hold 90% of the rows")
