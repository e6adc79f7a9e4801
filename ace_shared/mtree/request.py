"""``ace mtree ...`` requests: each action's options declared once (see :mod:`ace_shared.options`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.provenance import ORIGIN_OPTIONS, OriginFilter, parse_until
from ace_shared.diff.request import OUTPUT_FORMATS
from ace_shared.errors import BadOptionError
from ace_shared.nodes.ident import TableName, parse_table_name
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

_DBNAME = dbname_option("the cluster's first")
_NODES = Option("nodes", TEXT, "'all' or a comma-separated list of node names.", default="all")
_BLOCK_ROWS = Option("block_rows", INT, "Rows per leaf block of the tree.",
                     setting="MTREE_BLOCK_ROWS_DEFAULT", low="MTREE_BLOCK_ROWS_MIN",
                     high="BLOCK_ROWS_MAX")
_MAX_CPU = Option("max_cpu_ratio", NUMBER, "Share of this machine's CPUs to use.",
                  setting="MAX_CPU_RATIO_DEFAULT", low=0, low_exclusive=True, high=1)
_OUTPUT = Option("output", CHOICE, "Format of the diff report.", default="json",
                 choices=OUTPUT_FORMATS)
_SOME_TABLE = Option("table_name", TEXT, "Only this table's tree (schema.table); "
                     "without it, every object ACE created for trees.", positional=True)

def _route(commands: dict[str, Command]) -> dict[str, Command]:
    """Each action's REST path, /mtree/<action>, and its CLI words, ``mtree <action>``."""
    return {a: Command(c.name, c.help, c.options, route=f"/mtree/{a}", cli=("mtree", a))
            for a, c in commands.items()}


MTREE_COMMANDS: dict[str, Command] = _route({
    "init": Command("mtree-init", "Create ACE's mtree schema on every node.",
                    (CLUSTER_NAME, _DBNAME, _NODES, QUIET)),
    "build": Command("mtree-build", "Hash every block of a table on every node and start "
                     "tracking its changes.",
                     (CLUSTER_NAME, TABLE_NAME, _DBNAME, _NODES, _BLOCK_ROWS, QUIET, NO_WAIT)),
    "update": Command("mtree-update", "Fold the changes tracked since the last update into "
                      "the trees.", (CLUSTER_NAME, TABLE_NAME, _DBNAME, _NODES, QUIET, NO_WAIT)),
    "table-diff": Command("mtree-table-diff", "Update the trees, then diff only the blocks "
                          "whose hashes differ.",
                          (CLUSTER_NAME, TABLE_NAME, _DBNAME, _NODES, _MAX_CPU, _OUTPUT,
                           *ORIGIN_OPTIONS, QUIET, NO_WAIT)),
    "teardown": Command("mtree-teardown", "Remove one table's tree, or every object ACE "
                        "created for trees.", (CLUSTER_NAME, _SOME_TABLE, _DBNAME, _NODES, QUIET)),
})


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
    against_origin: str | None = None
    until: str | None = None

    @property
    def origin_filter(self) -> OriginFilter:
        return OriginFilter(self.against_origin, self.until)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["table_name"] = self.table.display if self.table else None
        del d["table"]
        return d


def validate_mtree_request(raw: dict[str, Any], settings: Settings,
                           style: Style = "api") -> MtreeRequest:
    """Check every option of an mtree request; raise one clear error for the first bad one."""
    action = str(raw.get("action") or "")
    if action not in MTREE_COMMANDS:
        raise BadOptionError(f"The mtree action must be one of {', '.join(MTREE_COMMANDS)}; "
                             f"got {action!r}.")
    values = read_options(MTREE_COMMANDS[action], raw, settings, style)
    table = values.get("table_name")
    defaults = MtreeRequest(action, values["cluster_name"])
    return MtreeRequest(
        action=action,
        cluster_name=values["cluster_name"],
        table=parse_table_name(table) if table else None,
        dbname=values.get("dbname") or None,
        nodes=values.get("nodes") or "all",
        block_rows=values.get("block_rows") or settings.MTREE_BLOCK_ROWS_DEFAULT,
        max_cpu_ratio=values.get("max_cpu_ratio") or settings.MAX_CPU_RATIO_DEFAULT,
        output=values.get("output") or defaults.output,
        quiet=bool(values.get("quiet")),
        role=raw.get("role") or None,
        against_origin=(values.get("against_origin") or "").strip() or None,
        until=parse_until(values.get("until"), "until" if style == "api" else "--until"),
    )
