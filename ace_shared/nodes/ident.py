"""PostgreSQL identifiers: parse ``schema.table`` the way PostgreSQL does, quote safely.

Names arrive from the command line and the API as text such as ``public.users`` or
``"Sales"."Order Items"``. They are split by PostgreSQL's own rules (unquoted parts
fold to lower case, ``""`` inside quotes is a quote) and are only ever put back
into SQL through :func:`quote_ident` or psycopg2's ``sql.Identifier``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ace_shared.errors import BadOptionError


@dataclass(frozen=True)
class TableName:
    """A schema-qualified table name, each part as stored in the catalog."""

    schema: str
    table: str

    def __str__(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def display(self) -> str:
        """The name as a user would type it (quotes only where needed)."""
        return f"{display_ident(self.schema)}.{display_ident(self.table)}"


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL, doubling embedded quotes."""
    return '"' + name.replace('"', '""') + '"'


def display_ident(name: str) -> str:
    """Quote an identifier only when PostgreSQL would need it."""
    plain = name and (name[0].isalpha() or name[0] == "_") and all(
        c.isalnum() or c in "_$" for c in name
    ) and name == name.lower() and name.isascii()
    return name if plain else quote_ident(name)


def fold_unquoted(word: str) -> str:
    """Lower-case an unquoted name as PostgreSQL does in a UTF-8 database: ASCII letters only."""
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in word)


def split_identifiers(text: str) -> list[str]:
    """Split a dotted name into parts, honouring double quotes."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise BadOptionError(f"The name {text!r} has an unclosed double quote.")
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            part = "".join(buf)
            if not part:
                raise BadOptionError(f"The name {text!r} has an empty quoted part.")
        else:
            start = i
            while i < n and text[i] not in '.' and not text[i].isspace() and text[i] != '"':
                i += 1
            part = fold_unquoted(text[start:i])
            if not part:
                raise BadOptionError(f"The name {text!r} is not a valid schema.table name.")
        parts.append(part)
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return parts
        if text[i] != ".":
            raise BadOptionError(f"The name {text!r} is not a valid schema.table name"
                                 f"{_quoting_hint(text)}.")
        i += 1


def _quoting_hint(text: str) -> str:
    """``; a name with spaces ... "Sales"."Order Items"`` for a name typed without its quotes."""
    if '"' in text or not any(c.isspace() for c in text.strip()):
        return ""
    quoted = ".".join(quote_ident(part.strip()) for part in text.split("."))
    return (f"; a name with spaces or capitals is written in double quotes, such as {quoted} "
            f"(in a shell: '{quoted}')")


def parse_table_name(text: str) -> TableName:
    """Parse ``schema.table`` (either part may be quoted) into a :class:`TableName`."""
    if not text or not text.strip():
        raise BadOptionError("A table name is required, written as schema.table.")
    parts = split_identifiers(text)
    if len(parts) != 2:
        raise BadOptionError(
            f"The table name {text!r} must be schema-qualified, for example public.users."
        )
    return TableName(parts[0], parts[1])
