"""repset-diff's options, declared once, and a validated request from any front door."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ace_shared.checks.options import (
    DBNAME,
    NODES,
    OUTPUT,
    SKIP_FILE,
    SKIP_TABLES,
    TABLE_OPTIONS,
    skip_text,
    skipped_tables,
)
from ace_shared.config import Settings
from ace_shared.nodes.ident import TableName
from ace_shared.options import CLUSTER_NAME, QUIET, TEXT, Command, Option, Style, read_options

REPSET_DIFF = Command("repset-diff", "Diff every table of a replication set across the nodes.", (
    CLUSTER_NAME,
    Option("repset_name", TEXT, "The replication set (or publication) to compare.",
           required=True, positional=True),
    DBNAME, NODES, SKIP_TABLES, SKIP_FILE, OUTPUT, QUIET, *TABLE_OPTIONS,
))


@dataclass(frozen=True)
class RepsetDiffRequest:
    cluster_name: str
    repset: str
    dbname: str | None = None
    nodes: str = "all"
    skip: frozenset[TableName] = field(default_factory=frozenset)
    output: str = "json"
    quiet: bool = False
    role: str | None = None
    diff_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_name": self.cluster_name, "repset_name": self.repset,
                "dbname": self.dbname, "nodes": self.nodes, "skip_tables": skip_text(self.skip),
                "output": self.output, "quiet": self.quiet, "role": self.role,
                **self.diff_options}


def validate_repset_diff(raw: dict[str, Any], settings: Settings,
                         style: Style = "api") -> RepsetDiffRequest:
    """Check the options; the first bad one raises one clear error."""
    values = read_options(REPSET_DIFF, raw, settings, style)
    return RepsetDiffRequest(
        cluster_name=values["cluster_name"], repset=values["repset_name"],
        dbname=values["dbname"], nodes=values["nodes"],
        skip=skipped_tables(values["skip_tables"], values.get("skip_file"), None),
        output=values["output"], quiet=values["quiet"], role=raw.get("role") or None,
        diff_options={o.name: values[o.name] for o in TABLE_OPTIONS},
    )
