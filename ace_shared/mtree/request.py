"""A validated ``ace mtree ...`` request."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.request import OUTPUT_FORMATS, parse_bool, parse_int, parse_ratio
from ace_shared.errors import BadOptionError
from ace_shared.nodes.ident import TableName, parse_table_name

ACTIONS = ("init", "build", "update", "table-diff", "teardown")
NEEDS_TABLE = ("build", "update", "table-diff")


@dataclass(frozen=True)
class MtreeRequest:
    action: str
    cluster_name: str
    table: TableName | None = None
    dbname: str | None = None
    nodes: str = "all"
    block_rows: int = 100
    max_cpu_ratio: float = 0.6
    output: str = "json"
    quiet: bool = False
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["table_name"] = self.table.display if self.table else None
        del d["table"]
        return d


def validate_mtree_request(raw: dict[str, Any], settings: Settings) -> MtreeRequest:
    """Check every option of an mtree request; raise one clear error for the first bad one."""
    action = str(raw.get("action") or "")
    if action not in ACTIONS:
        raise BadOptionError(f"The mtree action must be one of {', '.join(ACTIONS)}; "
                             f"got {action!r}.")
    cluster = raw.get("cluster_name")
    if not cluster or not isinstance(cluster, str):
        raise BadOptionError("cluster_name is required.")
    table_text = raw.get("table_name")
    if action in NEEDS_TABLE and (not table_text or not isinstance(table_text, str)):
        raise BadOptionError(f"mtree {action} needs a table, written as schema.table.")
    output = str(raw.get("output") or "json").lower()
    if output not in OUTPUT_FORMATS:
        raise BadOptionError(f"output must be one of json, csv, html; got {raw.get('output')!r}.")
    nodes = raw.get("nodes") or "all"
    if isinstance(nodes, list):
        nodes = ",".join(str(n) for n in nodes)
    block_rows = raw.get("block_rows")
    return MtreeRequest(
        action=action,
        cluster_name=cluster,
        table=parse_table_name(table_text) if table_text else None,
        dbname=str(raw["dbname"]) if raw.get("dbname") else None,
        nodes=str(nodes),
        block_rows=parse_int("block_rows", block_rows, settings.MTREE_BLOCK_ROWS_MIN,
                             settings.BLOCK_ROWS_MAX)
        if block_rows is not None else settings.MTREE_BLOCK_ROWS_DEFAULT,
        max_cpu_ratio=parse_ratio("max_cpu_ratio", raw["max_cpu_ratio"])
        if raw.get("max_cpu_ratio") is not None else settings.MAX_CPU_RATIO_DEFAULT,
        output=output,
        quiet=parse_bool("quiet", raw.get("quiet", False)),
        role=raw.get("role") or None,
    )
