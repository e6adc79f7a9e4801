"""schema-diff: read the schema on every node at once, compare every pair, write the result.

With ``ddl_only`` false, the data of every table present on all compared nodes
(minus the skipped ones) is then diffed too, one table-diff per table.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from psycopg2.extensions import cursor

from ace_shared.checks.report import write_result
from ace_shared.config import Settings
from ace_shared.diff.plan import resolve_targets
from ace_shared.errors import NotFoundError
from ace_shared.nodes.each import on_each
from ace_shared.nodes.ident import TableName, display_ident, split_identifiers
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import mixed_case_hint
from ace_shared.repsetdiff.tables import diff_tables, exit_code
from ace_shared.schemadiff.catalog import read_schema, schema_exists
from ace_shared.schemadiff.compare import Catalog, compare_all, object_counts
from ace_shared.schemadiff.request import SchemaDiffRequest
from ace_shared.words import and_list

CHILD_KINDS = ("column", "constraint", "index", "trigger")


def _drop_skipped(catalog: Catalog, skipped: set[str]) -> Catalog:
    """Leave skipped tables, and everything that hangs on them, out of the comparison."""
    out = {}
    for kind, objects in catalog.items():
        if kind == "table":
            out[kind] = {k: v for k, v in objects.items() if k not in skipped}
        elif kind in CHILD_KINDS:
            out[kind] = {k: v for k, v in objects.items() if v.parent not in skipped}
        else:
            out[kind] = objects
    return out


def _schema_case_hint(cur: cursor, schema: str) -> str:
    """The quoted form of a schema that exists only with other letter cases (see case_hint)."""
    cur.execute("SELECT nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.lower(nspname) "
                "OPERATOR(pg_catalog.=) pg_catalog.lower(%s) ORDER BY 1 LIMIT 1", (schema,))
    row = cur.fetchone()
    return "" if row is None else mixed_case_hint(display_ident(row[0]))


def read_catalogs(sessions: NodeSessions, schema: str) -> dict[str, Catalog | None]:
    """Each node's objects of ``schema`` (``None`` where the schema does not exist)."""
    def read(cur: cursor, node: str) -> Catalog | None:
        return read_schema(cur, schema) if schema_exists(cur, schema) else None
    catalogs = on_each(sessions, read)
    if all(c is None for c in catalogs.values()):
        hint = sessions.on_one(sessions.order[0], lambda cur: _schema_case_hint(cur, schema))
        raise NotFoundError(f"Schema {display_ident(schema)} exists on none of the nodes "
                            f"{and_list(catalogs)}{hint or '; check the name and --dbname'}.")
    return catalogs


def common_tables(catalogs: dict[str, Catalog | None]) -> list[str]:
    """The tables every compared node has (a node without the schema has none)."""
    present = [set((c or {}).get("table", {})) for c in catalogs.values()]
    return sorted(set.intersection(*present)) if present else []


def compare_schema(request: SchemaDiffRequest, settings: Settings, task_id: str,
                   ) -> tuple[dict[str, Any], list[TableName]]:
    """Compare the structure; the result so far and the tables whose data to diff (if asked)."""
    started = datetime.now(timezone.utc)
    dbname, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                      settings, request.role)
    sessions = NodeSessions(targets)
    try:
        catalogs = read_catalogs(sessions, request.schema)
    finally:
        sessions.close()
    skipped = {display_ident(t.table) for t in request.skip if t.schema == request.schema}
    catalogs = {n: None if c is None else _drop_skipped(c, skipped)
                for n, c in catalogs.items()}
    differences = compare_all(catalogs, request.schema)
    result: dict[str, Any] = {
        "task_id": task_id, "command": "schema-diff", "cluster_name": request.cluster_name,
        "database": dbname, "schema_name": request.schema, "nodes": [t.node for t in targets],
        "ddl_only": request.ddl_only, "skipped_tables": sorted(t.display for t in request.skip),
        "objects": object_counts(catalogs), "differences": differences,
        "difference_count": len(differences), "mismatch": bool(differences),
        "start_time": started.isoformat(),
    }
    tables = [] if request.ddl_only else [
        TableName(request.schema, _undisplay(t)) for t in common_tables(catalogs)]
    return result, tables


def table_options(request: SchemaDiffRequest) -> dict[str, Any]:
    return {**request.diff_options, "cluster_name": request.cluster_name,
            "dbname": request.dbname, "nodes": request.nodes, "role": request.role}


def finish_schema(result: dict[str, Any], tables: list[dict[str, Any]] | None,
                  settings: Settings, output: str) -> dict[str, Any]:
    """Add the tables' outcomes (when data was diffed), the exit code and times; write."""
    code = 1 if result["differences"] else 0
    if tables is not None:
        result["tables"] = tables
        code = max(code, exit_code(tables))
    finished = datetime.now(timezone.utc)
    started = datetime.fromisoformat(result["start_time"])
    result.update({"end_time": finished.isoformat(),
                   "time_taken": round((finished - started).total_seconds(), 3),
                   "exit_code": code})
    return write_result(settings.output_dir, "schema_diffs", "schema_diff", result, output)


def run_schema_diff(request: SchemaDiffRequest, settings: Settings, task_id: str,
                    progress: Any = None) -> dict[str, Any]:
    """Compare the schema in this process; return the result (also written to its file)."""
    result, names = compare_schema(request, settings, task_id)
    tables = None
    if not request.ddl_only:
        tables = diff_tables(names, table_options(request), settings, progress)
    return finish_schema(result, tables, settings, request.output)


def _undisplay(name: str) -> str:
    """The stored name of a relation from its display form."""
    return split_identifiers(name)[0]
