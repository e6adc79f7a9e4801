"""A table-diff's summary and the result its task records, as values with named fields.

:class:`DiffSummary` is what a merge (:func:`ace_shared.diff.merge.merge_diff`)
makes: the workers record it, the CLI prints it and repset-diff reads its
outcome from it. :meth:`DiffSummary.to_dict` is the one place its keys and
their order are spelt, as the diff file's ``"summary"`` and ``--json`` show them;
:meth:`DiffSummary.from_dict` reads such a mapping back (a fleet's result).
:class:`DiffTaskResult` is what the task store keeps for a table-diff, an mtree
table-diff or a rerun (``diff_file``, ``total_rows``, ``mismatched_rows``,
``summary``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# the keys a summary always has, in the order a diff file shows them
_CORE_KEYS = (
    "task_id", "cluster_name", "database", "schema_name", "table_name", "table", "nodes",
    "primary_key", "columns", "table_filter", "block_rows", "batch_size", "max_cpu_ratio",
    "executor", "start_time", "end_time", "time_taken", "total_rows_checked", "ranges_total",
    "ranges_checked", "diff_rows", "diff_rows_by_pair", "mismatch", "max_allowed_diffs",
    "diff_partial", "against_origin", "until",
)
_OPTIONAL_KEYS = ("commit_ts_note", "mtree", "partial_reason")
_RERUN_KEYS = ("operation", "behavior", "rerun_of", "previous_diff_rows",
               "previous_diff_partial", "resolved", "remaining")
_FILE_KEYS = ("diff_file", "report_file")
_KNOWN = frozenset(_CORE_KEYS + _OPTIONAL_KEYS + _RERUN_KEYS + _FILE_KEYS)


@dataclass(frozen=True)
class RerunAccount:
    """What a table-rerun adds to its summary: what it re-checked and what it resolved."""

    behavior: str
    rerun_of: str
    previous_diff_rows: int
    previous_diff_partial: bool
    resolved: int
    remaining: int
    operation: str = "table-rerun"

    def to_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "behavior": self.behavior,
                "rerun_of": self.rerun_of, "previous_diff_rows": self.previous_diff_rows,
                "previous_diff_partial": self.previous_diff_partial,
                "resolved": self.resolved, "remaining": self.remaining}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RerunAccount | None:
        """The account in a summary, or None when it is no rerun's."""
        if d.get("operation") != "table-rerun":
            return None
        return cls(str(d.get("behavior")), str(d.get("rerun_of")),
                   int(d.get("previous_diff_rows") or 0),
                   bool(d.get("previous_diff_partial")), int(d.get("resolved") or 0),
                   int(d.get("remaining") or 0))


@dataclass(frozen=True)
class DiffSummary:
    """One table-diff's outcome: what was compared, how, and what differs."""

    task_id: str
    cluster_name: str
    database: str
    schema_name: str
    table_name: str
    table: str
    nodes: tuple[str, ...]
    primary_key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, type) in table order
    table_filter: str | None
    block_rows: int
    batch_size: int
    max_cpu_ratio: float | None
    executor: str
    start_time: str
    end_time: str
    time_taken: float
    total_rows_checked: int
    ranges_total: int
    ranges_checked: int
    diff_rows: int
    diff_rows_by_pair: Mapping[str, int]
    max_allowed_diffs: int
    diff_partial: bool
    diff_file: str
    against_origin: str | None = None
    until: str | None = None
    commit_ts_note: str | None = None
    mtree: Mapping[str, Any] | None = None
    partial_reason: str | None = None
    rerun: RerunAccount | None = None
    report_file: str | None = None
    # keys a summary read back had that none of the fields above stand for, kept as read
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mismatch(self) -> bool:
        return self.diff_rows > 0

    def to_dict(self) -> dict[str, Any]:
        """The summary as the diff file, ``--json`` and the task store show it."""
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "cluster_name": self.cluster_name,
            "database": self.database,
            "schema_name": self.schema_name,
            "table_name": self.table_name,
            "table": self.table,
            "nodes": list(self.nodes),
            "primary_key": list(self.primary_key),
            "columns": [{"name": n, "type": t} for n, t in self.columns],
            "table_filter": self.table_filter,
            "block_rows": self.block_rows,
            "batch_size": self.batch_size,
            "max_cpu_ratio": self.max_cpu_ratio,
            "executor": self.executor,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "time_taken": self.time_taken,
            "total_rows_checked": self.total_rows_checked,
            "ranges_total": self.ranges_total,
            "ranges_checked": self.ranges_checked,
            "diff_rows": self.diff_rows,
            "diff_rows_by_pair": dict(self.diff_rows_by_pair),
            "mismatch": self.mismatch,
            "max_allowed_diffs": self.max_allowed_diffs,
            "diff_partial": self.diff_partial,
            "against_origin": self.against_origin,
            "until": self.until,
        }
        if self.commit_ts_note is not None:
            out["commit_ts_note"] = self.commit_ts_note
        if self.mtree is not None:
            out["mtree"] = self.mtree
        if self.partial_reason is not None:
            out["partial_reason"] = self.partial_reason
        if self.rerun is not None:
            out.update(self.rerun.to_dict())
        out.update(self.extra)
        out["diff_file"] = self.diff_file
        if self.report_file is not None:
            out["report_file"] = self.report_file
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiffSummary:
        """A summary :meth:`to_dict` wrote (a fleet's result, a diff file's summary)."""
        def text(key: str) -> str:
            return str(d.get(key) or "")

        def number(key: str) -> int:
            return int(d.get(key) or 0)

        rerun = RerunAccount.from_dict(d)
        known = _KNOWN if rerun is not None else _KNOWN - set(_RERUN_KEYS)
        return cls(
            task_id=text("task_id"), cluster_name=text("cluster_name"),
            database=text("database"), schema_name=text("schema_name"),
            table_name=text("table_name"), table=text("table"),
            nodes=tuple(str(n) for n in d.get("nodes") or ()),
            primary_key=tuple(str(k) for k in d.get("primary_key") or ()),
            columns=tuple((str(c.get("name")), str(c.get("type")))
                          for c in d.get("columns") or ()),
            table_filter=d.get("table_filter"), block_rows=number("block_rows"),
            batch_size=number("batch_size"),
            max_cpu_ratio=d.get("max_cpu_ratio"),
            executor=text("executor"), start_time=text("start_time"),
            end_time=text("end_time"), time_taken=float(d.get("time_taken") or 0),
            total_rows_checked=number("total_rows_checked"),
            ranges_total=number("ranges_total"), ranges_checked=number("ranges_checked"),
            diff_rows=number("diff_rows"),
            diff_rows_by_pair={str(k): int(v)
                               for k, v in (d.get("diff_rows_by_pair") or {}).items()},
            max_allowed_diffs=number("max_allowed_diffs"),
            diff_partial=bool(d.get("diff_partial")), diff_file=text("diff_file"),
            against_origin=d.get("against_origin"), until=d.get("until"),
            commit_ts_note=d.get("commit_ts_note"), mtree=d.get("mtree"),
            partial_reason=d.get("partial_reason"), rerun=rerun,
            report_file=d.get("report_file"),
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass(frozen=True)
class DiffTaskResult:
    """What the task store keeps for a job that wrote a diff file."""

    summary: DiffSummary

    @property
    def diff_file(self) -> str:
        return self.summary.diff_file

    def to_dict(self) -> dict[str, Any]:
        return {"diff_file": self.summary.diff_file,
                "total_rows": self.summary.total_rows_checked,
                "mismatched_rows": self.summary.diff_rows,
                "summary": self.summary.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiffTaskResult:
        return cls(DiffSummary.from_dict(d.get("summary") or {}))
