"""Options the three cluster checks share, declared once (see :mod:`ace_shared.options`).

``skip_tables`` is a comma-separated list and ``skip_file`` (CLI only: an API
caller may not make ACE read its files) a file of names, one a line (blank lines
and ``#`` comments ignored). A name may be ``schema.table`` or, for schema-diff,
a bare table of the compared schema; either part may be quoted as in SQL.
"""

from __future__ import annotations

from pathlib import Path

from ace_shared.diff.request import TABLE_DIFF
from ace_shared.errors import BadOptionError
from ace_shared.nodes.ident import TableName, split_identifiers
from ace_shared.options import CHOICE, TEXT, Option, dbname_option

CHECK_OUTPUTS = ("json", "html")

DBNAME = dbname_option("the cluster's first")
NODES = Option("nodes", TEXT, "'all' or a comma-separated list of node names.", default="all")
OUTPUT = Option("output", CHOICE, "Format of the result: json, or html for a page beside the "
                "JSON file.", default="json", choices=CHECK_OUTPUTS)
SKIP_TABLES = Option("skip_tables", TEXT, "Comma-separated tables to leave out.")
SKIP_FILE = Option("skip_file", TEXT, "A file of tables to leave out, one a line.", api=False)
# the table-diff options a check passes on to each table's diff
TABLE_OPTIONS = tuple(TABLE_DIFF.option(n) for n in ("block_rows", "max_cpu_ratio",
                                                      "batch_size"))


def split_names(text: str | None) -> list[str]:
    """Split a comma-separated list of names at commas outside double quotes."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text or "":
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def _read_skip_file(path_text: str) -> list[str]:
    path = Path(path_text).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadOptionError(f"The skip file {path} cannot be read ({exc.__class__.__name__}); "
                             "give a text file with one table name a line.") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def skipped_tables(skip_tables: str | None, skip_file: str | None,
                   default_schema: str | None) -> frozenset[TableName]:
    """The tables named by ``skip_tables`` and ``skip_file``, parsed as PostgreSQL would."""
    names = split_names(skip_tables) + (_read_skip_file(skip_file) if skip_file else [])
    out = set()
    for name in names:
        parts = split_identifiers(name)
        if len(parts) == 1 and default_schema:
            out.add(TableName(default_schema, parts[0]))
        elif len(parts) == 2:
            out.add(TableName(parts[0], parts[1]))
        else:
            raise BadOptionError(f"The skipped table {name!r} must be written as schema.table.")
    return frozenset(out)


def skip_text(skip: frozenset[TableName]) -> str | None:
    """The skipped tables as one ``skip_tables`` value (what travels to a worker)."""
    return ",".join(sorted(t.display for t in skip)) or None
