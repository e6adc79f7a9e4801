"""A validated repset-diff request, whichever front door it came through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ace_shared.checks.options import (
    bool_option,
    check_output,
    nodes_option,
    required,
    skipped_tables,
)
from ace_shared.diff.request import text_option
from ace_shared.nodes.ident import TableName

# table-diff options passed on to every table of the set, checked by table-diff itself
TABLE_OPTIONS = ("block_rows", "max_cpu_ratio", "batch_size")


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
                "dbname": self.dbname, "nodes": self.nodes,
                "skip_tables": sorted(t.display for t in self.skip), "output": self.output,
                "quiet": self.quiet, "role": self.role, **self.diff_options}


def validate_repset_diff(raw: dict[str, Any]) -> RepsetDiffRequest:
    """Check the options; the first bad one raises one clear error."""
    return RepsetDiffRequest(
        cluster_name=required(raw, "cluster_name", "the cluster to compare"),
        repset=required(raw, "repset_name", "the replication set (or publication) to compare"),
        dbname=text_option(raw, "dbname"), nodes=nodes_option(raw),
        skip=skipped_tables(raw, None), output=check_output(raw),
        quiet=bool_option(raw, "quiet", False), role=raw.get("role") or None,
        diff_options={k: raw[k] for k in TABLE_OPTIONS if raw.get(k) not in (None, "")},
    )
