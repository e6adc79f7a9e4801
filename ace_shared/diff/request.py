"""A table-diff's options (:data:`TABLE_DIFF`), a validated request, and the job its workers receive.

:func:`validate_diff_request` is the one place options are checked, whichever
front door (CLI, API, scheduler) they came through. :class:`DiffSpec` is what
travels to workers: JSON-safe, and without passwords (workers read the cluster
definition themselves).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.provenance import ORIGIN_OPTIONS, OriginFilter, parse_until
from ace_shared.diff.tuning import DiffTuning
from ace_shared.nodes.filter import check_filter
from ace_shared.nodes.ident import TableName, parse_table_name
from ace_shared.nodes.shape import TableShape, shape_from_dict, shape_to_dict
from ace_shared.options import (
    CHOICE,
    CLUSTER_NAME,
    INT,
    NO_WAIT,
    NUMBER,
    QUIET,
    TABLE_NAME,
    TEXT,
    Command,
    Option,
    Style,
    dbname_option,
    read_options,
)

OUTPUT_FORMATS = ("json", "csv", "html")

TABLE_DIFF = Command("table-diff", "Compare a table across the nodes of a cluster.", (
    CLUSTER_NAME,
    TABLE_NAME,
    dbname_option("the cluster's first"),
    Option("block_rows", INT, "Rows per block.", setting="BLOCK_ROWS_DEFAULT",
           low="BLOCK_ROWS_MIN", high="BLOCK_ROWS_MAX"),
    Option("max_cpu_ratio", NUMBER,
           "Share of the CPUs to use (of this machine, or of each worker on a fleet).",
           setting="MAX_CPU_RATIO_DEFAULT", low=0, low_exclusive=True, high=1),
    Option("output", CHOICE, "Format of the diff report.", default="json",
           choices=OUTPUT_FORMATS),
    Option("nodes", TEXT, "'all' or a comma-separated list of node names.", default="all"),
    # ranges per task; 0 lets ACE choose: 1 in this process, on a fleet a few tapering
    # tasks per worker process (ace_shared.diff.ranges.tapered_sizes)
    Option("batch_size", INT, "Blocks per worker task.", setting="BATCH_SIZE_DEFAULT",
           low="BATCH_SIZE_MIN", high="BATCH_SIZE_MAX", automatic="chosen for the fleet's size"),
    QUIET,
    Option("table_filter", TEXT,
           "SQL WHERE condition restricting the rows compared (runs read-only)."),
    *ORIGIN_OPTIONS,
    NO_WAIT,
))


@dataclass(frozen=True)
class DiffRequest:
    """What the user asked for, checked (the defaults are :data:`TABLE_DIFF`'s)."""

    cluster_name: str
    table: TableName
    dbname: str | None
    block_rows: int
    max_cpu_ratio: float
    output: str
    nodes: str
    batch_size: int  # 0: automatic, decided where the work runs
    quiet: bool
    table_filter: str | None
    role: str | None = None
    against_origin: str | None = None
    until: str | None = None  # UTC text, as the diff file writes commit times

    @property
    def origin_filter(self) -> OriginFilter:
        return OriginFilter(self.against_origin, self.until)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["table_name"] = self.table.display
        del d["table"]
        if not self.batch_size:
            d["batch_size"] = None  # automatic, decided where the work runs
        return d


def validate_diff_request(raw: dict[str, Any], settings: Settings,
                          style: Style = "api") -> DiffRequest:
    """Check every option of a table-diff request; raise one clear error for the first bad one.

    ``style`` says how the request was written, so an error names ``--block-rows`` to the
    CLI's user and ``block_rows`` to the API's.
    """
    nodes = raw.get("nodes")
    if isinstance(nodes, list):  # a schedule may list the nodes
        raw = {**raw, "nodes": ",".join(str(n) for n in nodes)}
    values = read_options(TABLE_DIFF, raw, settings, style)
    return DiffRequest(
        cluster_name=values["cluster_name"],
        table=parse_table_name(values["table_name"]),
        dbname=values["dbname"],
        block_rows=values["block_rows"],
        max_cpu_ratio=values["max_cpu_ratio"],
        output=values["output"],
        nodes=values["nodes"],
        batch_size=values["batch_size"] or 0,
        quiet=values["quiet"],
        table_filter=check_filter(values["table_filter"]),
        role=raw.get("role") or None,
        against_origin=(values["against_origin"] or "").strip() or None,
        until=parse_until(values["until"], TABLE_DIFF.label("until", style)),
    )


@dataclass(frozen=True)
class DiffSpec:
    """The job as workers see it: everything to hash a range, nothing secret."""

    task_id: str
    cluster_name: str
    dbname: str
    nodes: tuple[str, ...]
    shape: TableShape
    table_filter: str | None
    block_rows: int
    batch_size: int
    max_diffs: int
    role: str | None
    work_dir: str
    origin_filter: OriginFilter = field(default_factory=OriginFilter)
    # per node: origin name -> cluster node (see ace_shared.replication.origins)
    origin_names: dict[str, dict[str, str]] = field(default_factory=dict)
    untracked: tuple[str, ...] = ()  # nodes with track_commit_timestamp off
    tuning: DiffTuning = field(default_factory=DiffTuning)  # how, never what, it compares

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "cluster_name": self.cluster_name, "dbname": self.dbname,
            "nodes": list(self.nodes), "shape": shape_to_dict(self.shape),
            "table_filter": self.table_filter, "block_rows": self.block_rows,
            "batch_size": self.batch_size, "max_diffs": self.max_diffs, "role": self.role,
            "work_dir": self.work_dir,
            "origin_filter": self.origin_filter.to_summary(),
            "origin_names": self.origin_names, "untracked": list(self.untracked),
            "tuning": self.tuning.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffSpec:
        return cls(d["task_id"], d["cluster_name"], d["dbname"], tuple(d["nodes"]),
                   shape_from_dict(d["shape"]), d["table_filter"], int(d["block_rows"]),
                   int(d["batch_size"]), int(d["max_diffs"]), d["role"], d["work_dir"],
                   OriginFilter(**d.get("origin_filter") or {}),
                   dict(d.get("origin_names") or {}), tuple(d.get("untracked") or ()),
                   DiffTuning.from_dict(d.get("tuning")))
