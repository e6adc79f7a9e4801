"""spock-diff's options, declared once, and a validated request from any front door."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ace_shared.checks.options import DBNAME, NODES, OUTPUT
from ace_shared.config import Settings
from ace_shared.options import CLUSTER_NAME, QUIET, Command, Style, read_options

SPOCK_DIFF = Command("spock-diff", "Compare the replication configuration (sets and "
                     "subscriptions) of every pair of nodes.",
                     (CLUSTER_NAME, DBNAME, NODES, OUTPUT, QUIET))


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


def validate_spock_diff(raw: dict[str, Any], settings: Settings,
                        style: Style = "api") -> SpockDiffRequest:
    values = read_options(SPOCK_DIFF, raw, settings, style)
    return SpockDiffRequest(cluster_name=values["cluster_name"], dbname=values["dbname"],
                            nodes=values["nodes"], output=values["output"],
                            quiet=values["quiet"], role=raw.get("role") or None)
