"""A validated spock-diff request, whichever front door it came through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ace_shared.checks.options import bool_option, check_output, nodes_option, required
from ace_shared.diff.request import text_option


@dataclass(frozen=True)
class SpockDiffRequest:
    cluster_name: str
    dbname: str | None = None
    nodes: str = "all"
    output: str = "json"
    quiet: bool = False
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_name": self.cluster_name, "dbname": self.dbname, "nodes": self.nodes,
                "output": self.output, "quiet": self.quiet, "role": self.role}


def validate_spock_diff(raw: dict[str, Any]) -> SpockDiffRequest:
    return SpockDiffRequest(
        cluster_name=required(raw, "cluster_name", "the cluster to check"),
        dbname=text_option(raw, "dbname"), nodes=nodes_option(raw), output=check_output(raw),
        quiet=bool_option(raw, "quiet", False), role=raw.get("role") or None)
