"""A table-rerun's options (:data:`TABLE_RERUN`) and a validated request.

:func:`validate_rerun_request` checks the options, the cluster definition and
the diff file (that it is for this cluster and table, and that its nodes are
still in the cluster); it never connects to a database, so the API can call
it before queueing the work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ace_shared.config import Settings
from ace_shared.difffile.file import DiffFile, open_for_table
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.ident import TableName, parse_table_name
from ace_shared.options import (
    CHOICE,
    CLUSTER_NAME,
    DIFF_FILE,
    NO_WAIT,
    QUIET,
    TABLE_NAME,
    Command,
    Option,
    Style,
    dbname_option,
    read_options,
)

BEHAVIORS = ("multiprocessing", "hostdb")

TABLE_RERUN = Command(
    "table-rerun", "Check again only the rows a diff file lists; write a new diff file.", (
        CLUSTER_NAME,
        TABLE_NAME,
        DIFF_FILE,
        dbname_option("the diff file's"),
        Option("behavior", CHOICE, "How the rows are compared again: multiprocessing (parallel "
               "batches) or hostdb (temporary tables on the nodes).", default="multiprocessing",
               choices=BEHAVIORS),
        QUIET,
        NO_WAIT,
    ))


@dataclass(frozen=True)
class RerunRequest:
    cluster_name: str
    table: TableName
    diff_file: str
    dbname: str | None = None
    quiet: bool = False
    behavior: str = "multiprocessing"
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_name": self.cluster_name, "table_name": self.table.display,
                "diff_file": self.diff_file, "dbname": self.dbname, "quiet": self.quiet,
                "behavior": self.behavior, "role": self.role}


def check_rerun_options(raw: dict[str, Any], style: Style = "api") -> RerunRequest:
    """Check the options alone (no file, no cluster); raise for the first bad one."""
    values = read_options(TABLE_RERUN, raw, Settings(), style)  # none read the settings
    role = raw.get("role")
    return RerunRequest(cluster_name=values["cluster_name"],
                        table=parse_table_name(values["table_name"]),
                        diff_file=values["diff_file"], dbname=values["dbname"],
                        quiet=values["quiet"], behavior=values["behavior"],
                        role=(role.strip() or None) if isinstance(role, str) else None)


def load_rerun_inputs(raw: dict[str, Any], settings: Settings,
                      style: Style = "api") -> tuple[RerunRequest, Cluster, DiffFile]:
    """Validate a request against its cluster and its diff file's summary."""
    request = check_rerun_options(raw, style)
    cluster, diff = open_for_table(settings, request.cluster_name, request.table,
                                   request.dbname, request.diff_file)
    # workers may run elsewhere: hand on the file's absolute path
    return replace(request, diff_file=str(diff.path)), cluster, diff


def validate_rerun_request(raw: dict[str, Any], settings: Settings,
                           style: Style = "api") -> RerunRequest:
    """Check every option, the cluster and the diff file's summary; touches no database.

    The rows are checked by the work itself, which fails with a sentence
    naming the file if one is bad (see :func:`open_for_table`).
    """
    request, _, _ = load_rerun_inputs(raw, settings, style)
    return request
