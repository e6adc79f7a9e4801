"""Options the three cluster checks share: node lists, output format, skipped tables.

``--skip-tables`` takes a comma-separated list and ``--skip-file`` a file of
names, one a line (blank lines and ``#`` comments ignored). A name may be
``schema.table`` or, for schema-diff, a bare table of the compared schema; either
part may be quoted as in SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ace_shared.diff.request import parse_bool, text_option
from ace_shared.errors import BadOptionError
from ace_shared.nodes.ident import TableName, split_identifiers

CHECK_OUTPUTS = ("json", "html")


def check_output(raw: dict[str, Any]) -> str:
    output = str(raw.get("output") or "json").strip().lower()
    if output not in CHECK_OUTPUTS:
        raise BadOptionError(f"output must be json or html; got {raw.get('output')!r}.")
    return output


def nodes_option(raw: dict[str, Any]) -> str:
    nodes = raw.get("nodes") or "all"
    if isinstance(nodes, list):
        nodes = ",".join(str(n) for n in nodes)
    return str(nodes)


def required(raw: dict[str, Any], name: str, what: str) -> str:
    value = text_option(raw, name)
    if not value:
        raise BadOptionError(f"{name} is required: {what}.")
    return value


def _split_list(text: str) -> list[str]:
    """Split at commas outside double quotes."""
    parts, buf, quoted = [], [], False
    for ch in text:
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


def skipped_tables(raw: dict[str, Any], default_schema: str | None) -> frozenset[TableName]:
    """The tables named by ``skip_tables`` and ``skip_file``, parsed as PostgreSQL would."""
    names: list[str] = []
    listed = raw.get("skip_tables")
    if isinstance(listed, list):
        names.extend(str(x) for x in listed)
    elif listed:
        names.extend(_split_list(str(listed)))
    skip_file = text_option(raw, "skip_file")
    if skip_file:
        names.extend(_read_skip_file(skip_file))
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


def bool_option(raw: dict[str, Any], name: str, default: bool) -> bool:
    value = raw.get(name)
    return default if value is None or value == "" else parse_bool(name, value)
