"""A validated schema-diff request, whichever front door it came through."""

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
from ace_shared.nodes.ident import TableName, split_identifiers


@dataclass(frozen=True)
class SchemaDiffRequest:
    cluster_name: str
    schema: str
    dbname: str | None = None
    nodes: str = "all"
    ddl_only: bool = True
    skip: frozenset[TableName] = field(default_factory=frozenset)
    output: str = "json"
    quiet: bool = False
    role: str | None = None
    # passed on to each table's diff when ddl_only is false
    diff_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_name": self.cluster_name, "schema_name": self.schema,
                "dbname": self.dbname, "nodes": self.nodes, "ddl_only": self.ddl_only,
                "skip_tables": sorted(t.display for t in self.skip), "output": self.output,
                "quiet": self.quiet, "role": self.role, **self.diff_options}


def validate_schema_diff(raw: dict[str, Any]) -> SchemaDiffRequest:
    """Check the options; the first bad one raises one clear error."""
    cluster = required(raw, "cluster_name", "the cluster to compare")
    schema_text = required(raw, "schema_name", "the schema to compare")
    parts = split_identifiers(schema_text)
    if len(parts) != 1:
        from ace_shared.errors import BadOptionError
        raise BadOptionError(f"The schema name {schema_text!r} must be one name, such as public.")
    schema = parts[0]
    return SchemaDiffRequest(
        cluster_name=cluster, schema=schema, dbname=text_option(raw, "dbname"),
        nodes=nodes_option(raw), ddl_only=bool_option(raw, "ddl_only", True),
        skip=skipped_tables(raw, schema), output=check_output(raw),
        quiet=bool_option(raw, "quiet", False), role=raw.get("role") or None,
        diff_options={k: raw[k] for k in ("block_rows", "max_cpu_ratio", "batch_size")
                      if raw.get(k) is not None},
    )
