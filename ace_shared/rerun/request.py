"""A validated table-rerun request.

:func:`validate_rerun_request` checks the options, the cluster definition and
the diff file (that it is for this cluster and table, and that its nodes are
still in the cluster); it never connects to a database, so the API can call
it before queueing the work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.request import parse_bool, required_target, text_option
from ace_shared.difffile.file import (
    DiffFile,
    check_diff_nodes,
    check_diff_target,
    load_diff_file,
    load_diff_header,
)
from ace_shared.errors import BadOptionError
from ace_shared.nodes.cluster import Cluster, load_cluster
from ace_shared.nodes.ident import TableName, parse_table_name

BEHAVIORS = ("multiprocessing", "hostdb")


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


def check_rerun_options(raw: dict[str, Any]) -> RerunRequest:
    cluster, table_text, diff_file = required_target(raw)
    behavior = (text_option(raw, "behavior") or "multiprocessing").lower()
    if behavior not in BEHAVIORS:
        raise BadOptionError(f"behavior must be multiprocessing or hostdb, not "
                             f"{raw.get('behavior')!r}.")
    return RerunRequest(cluster_name=cluster, table=parse_table_name(table_text),
                        diff_file=diff_file, dbname=text_option(raw, "dbname"),
                        quiet=parse_bool("quiet", raw.get("quiet", False)), behavior=behavior,
                        role=text_option(raw, "role"))


def load_rerun_inputs(raw: dict[str, Any], settings: Settings,
                       header_only: bool = False) -> tuple[RerunRequest, Cluster, DiffFile]:
    request = check_rerun_options(raw)
    cluster = load_cluster(settings.cluster_dir, request.cluster_name)
    diff = (load_diff_header if header_only else load_diff_file)(request.diff_file)
    check_diff_target(diff, request.cluster_name, request.table, request.dbname)
    cluster.database(request.dbname or diff.database)
    check_diff_nodes(diff, [n.name for n in cluster.nodes], cluster.name)
    # workers may run elsewhere: hand on the file's absolute path
    return replace(request, diff_file=str(diff.path)), cluster, diff


def validate_rerun_request(raw: dict[str, Any], settings: Settings) -> RerunRequest:
    """Check every option, the cluster and the diff file's summary; touches no database.

    Only the summary is read (from the file's end, for this project's files), so
    an API request stays small whatever the file's size; the rows are checked by
    the work itself, which fails with a sentence naming the file if one is bad.
    """
    request, _, _ = load_rerun_inputs(raw, settings, header_only=True)
    return request
