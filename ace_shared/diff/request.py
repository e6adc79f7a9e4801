"""A validated table-diff request, and the job description its workers receive.

:func:`validate_diff_request` is the one place options are checked, whichever
front door (CLI, API, scheduler) they came through. :class:`DiffSpec` is what
travels to workers: JSON-safe, and without passwords (workers read the cluster
definition themselves).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.filter import check_filter
from ace_shared.errors import BadOptionError
from ace_shared.nodes.ident import TableName, parse_table_name
from ace_shared.nodes.shape import TableShape, shape_from_dict, shape_to_dict

OUTPUT_FORMATS = ("json", "csv", "html")


def parse_bool(name: str, value: Any) -> bool:
    """Accept ``true/false``, ``True/False``, ``1/0``, ``yes/no``, ``on/off``."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off", ""):
        return False
    raise BadOptionError(f"{name} must be true or false, not {value!r}.")


def text_option(raw: dict[str, Any], name: str) -> str | None:
    """A text option, stripped; ``None`` when absent or blank; an error when not text."""
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadOptionError(f"{name} must be text, not {value!r}.")
    return value.strip() or None


def required_target(raw: dict[str, Any]) -> tuple[str, str, str]:
    """``cluster_name``, ``table_name`` and ``diff_file`` of a repair or rerun, all required."""
    cluster = text_option(raw, "cluster_name")
    if not cluster:
        raise BadOptionError("cluster_name is required.")
    table_text = text_option(raw, "table_name")
    if not table_text:
        raise BadOptionError("table_name is required, written as schema.table.")
    diff_file = text_option(raw, "diff_file")
    if not diff_file:
        raise BadOptionError("diff_file is required: the path of a diff file from table-diff.")
    return cluster, table_text, diff_file


def parse_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise BadOptionError(f"{name} must be a whole number, not {value!r}.") from None
    if not low <= number <= high:
        raise BadOptionError(f"{name} must be between {low} and {high}; got {number}.")
    return number


def parse_ratio(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise BadOptionError(f"{name} must be a number between 0 and 1, not {value!r}.") from None
    if not 0.0 < number <= 1.0:
        raise BadOptionError(f"{name} must be greater than 0 and at most 1; got {number}.")
    return number


@dataclass(frozen=True)
class DiffRequest:
    """What the user asked for, checked."""

    cluster_name: str
    table: TableName
    dbname: str | None = None
    block_rows: int = 10000
    max_cpu_ratio: float = 0.6
    output: str = "json"
    nodes: str = "all"
    # ranges per task; 0 lets ACE choose: 1 in this process, on a fleet a few tapering
    # tasks per worker process (ace_shared.diff.ranges.tapered_sizes)
    batch_size: int = 0
    quiet: bool = False
    table_filter: str | None = None
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["table_name"] = self.table.display
        del d["table"]
        if not self.batch_size:
            d["batch_size"] = None  # automatic, decided where the work runs
        return d


def validate_diff_request(raw: dict[str, Any], settings: Settings) -> DiffRequest:
    """Check every option of a table-diff request; raise one clear error for the first bad one."""
    cluster = raw.get("cluster_name")
    if not cluster or not isinstance(cluster, str):
        raise BadOptionError("cluster_name is required.")
    table_text = raw.get("table_name")
    if not table_text or not isinstance(table_text, str):
        raise BadOptionError("table_name is required, written as schema.table.")
    output = str(raw.get("output") or "json").lower()
    if output not in OUTPUT_FORMATS:
        raise BadOptionError(f"output must be one of json, csv, html; got {raw.get('output')!r}.")
    nodes = raw.get("nodes") or "all"
    if isinstance(nodes, list):
        nodes = ",".join(str(n) for n in nodes)
    dbname = raw.get("dbname") or None
    return DiffRequest(
        cluster_name=cluster,
        table=parse_table_name(table_text),
        dbname=str(dbname) if dbname else None,
        block_rows=parse_int("block_rows", raw.get("block_rows", settings.BLOCK_ROWS_DEFAULT)
                             if raw.get("block_rows") is not None else settings.BLOCK_ROWS_DEFAULT,
                             settings.BLOCK_ROWS_MIN, settings.BLOCK_ROWS_MAX),
        max_cpu_ratio=parse_ratio("max_cpu_ratio", raw["max_cpu_ratio"])
        if raw.get("max_cpu_ratio") is not None else settings.MAX_CPU_RATIO_DEFAULT,
        output=output,
        nodes=str(nodes),
        batch_size=parse_int("batch_size", raw["batch_size"], settings.BATCH_SIZE_MIN,
                             settings.BATCH_SIZE_MAX)
        if raw.get("batch_size") is not None else settings.BATCH_SIZE_DEFAULT,
        quiet=parse_bool("quiet", raw.get("quiet", False)),
        table_filter=check_filter(raw.get("table_filter")),
        role=raw.get("role") or None,
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "cluster_name": self.cluster_name, "dbname": self.dbname,
            "nodes": list(self.nodes), "shape": shape_to_dict(self.shape),
            "table_filter": self.table_filter, "block_rows": self.block_rows,
            "batch_size": self.batch_size, "max_diffs": self.max_diffs, "role": self.role,
            "work_dir": self.work_dir,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffSpec:
        return cls(d["task_id"], d["cluster_name"], d["dbname"], tuple(d["nodes"]),
                   shape_from_dict(d["shape"]), d["table_filter"], int(d["block_rows"]),
                   int(d["batch_size"]), int(d["max_diffs"]), d["role"], d["work_dir"])
