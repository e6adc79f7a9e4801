"""schema-diff's options, declared once, and a validated request from any front door."""

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
from ace_shared.errors import BadOptionError
from ace_shared.nodes.ident import TableName, split_identifiers
from ace_shared.options import BOOL, CLUSTER_NAME, QUIET, TEXT, Command, Option, Style, read_options

SCHEMA_DIFF = Command(
    "schema-diff", "Compare a schema's objects (and, with ddl_only false, its data) across "
    "the nodes.", (
        CLUSTER_NAME,
        Option("schema_name", TEXT, "The schema to compare.", required=True, positional=True),
        DBNAME, NODES,
        Option("ddl_only", BOOL, "Compare structure only; false diffs every table's data too.",
               default=True),
        SKIP_TABLES, SKIP_FILE, OUTPUT, QUIET, *TABLE_OPTIONS,
    ))


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
                "skip_tables": skip_text(self.skip), "output": self.output,
                "quiet": self.quiet, "role": self.role, **self.diff_options}


def validate_schema_diff(raw: dict[str, Any], settings: Settings,
                         style: Style = "api") -> SchemaDiffRequest:
    """Check the options; the first bad one raises one clear error."""
    values = read_options(SCHEMA_DIFF, raw, settings, style)
    parts = split_identifiers(values["schema_name"])
    if len(parts) != 1:
        raise BadOptionError(f"The schema name {values['schema_name']!r} must be one name, "
                             "such as public.")
    return SchemaDiffRequest(
        cluster_name=values["cluster_name"], schema=parts[0], dbname=values["dbname"],
        nodes=values["nodes"], ddl_only=values["ddl_only"],
        skip=skipped_tables(values["skip_tables"], values.get("skip_file"), parts[0]),
        output=values["output"], quiet=values["quiet"], role=raw.get("role") or None,
        diff_options={o.name: values[o.name] for o in TABLE_OPTIONS},
    )
