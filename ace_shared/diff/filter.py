"""Guarding a user's ``--table-filter`` before it reaches SQL.

The filter is SQL by design (a WHERE clause), so it cannot be parameterised.
It is checked to be one expression: no statement separator, no comment that
could hide the rest of ACE's query, and balanced parentheses, so that wrapped
in ``( ... )`` it cannot close ACE's parenthesis. Quotes are skipped by
PostgreSQL's own lexical rules (``E''`` strings take backslash escapes, a
``$`` inside a name does not open a dollar quote), so nothing hides behind
them. It then runs only inside read-only transactions, and is test-planned on
every node before any work.
"""

from __future__ import annotations

from ace_shared.errors import FilterError


def _is_ident_char(c: str) -> bool:
    """A character that continues an identifier (so a ``$`` after it is part of the name)."""
    return c.isalnum() or c in "_$" or not c.isascii()


def _is_e_string(expr: str, quote_at: int) -> bool:
    """True when the quote at ``quote_at`` opens an ``E'...'`` string (backslash escapes)."""
    if quote_at == 0 or expr[quote_at - 1] not in "eE":
        return False
    return quote_at == 1 or not _is_ident_char(expr[quote_at - 2])


# Functions a filter must not call: they change the session (and so could undo the
# caller's SET ROLE) or run SQL of their own, which would then run with other rights.
DENIED_FUNCTIONS = frozenset({
    "set_config", "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema",
    "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema",
    "database_to_xml_and_xmlschema", "dblink", "dblink_exec", "dblink_open", "dblink_send_query",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "lo_import", "lo_export",
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
})


def _deny(word: str, text: str) -> None:
    if word in DENIED_FUNCTIONS:
        raise FilterError(f"The table filter may not call {word}() (it could change the session "
                          f"or run other SQL); use a plain condition on the table's columns.")


def check_filter(text: str | None) -> str | None:
    """Return the filter stripped, or ``None``; raise :class:`FilterError` if unsafe."""
    if text is None or not text.strip():
        return None
    expr = text.strip()
    depth = 0
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in ("'", '"'):
            escapes = c == "'" and _is_e_string(expr, i)
            j = i + 1
            while j < n:
                if escapes and expr[j] == "\\":
                    j += 2
                    continue
                if expr[j] == c:
                    if j + 1 < n and expr[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise FilterError(f"The table filter {text!r} has an unclosed quote.")
            if c == '"':
                _deny(expr[i + 1:j].replace('""', '"'), text)
            i = j + 1
            continue
        if c == "$" and not (i > 0 and _is_ident_char(expr[i - 1])):
            end = expr.find("$", i + 1)
            tag = expr[i:end + 1] if end > i else ""
            if tag and all(ch.isalnum() or ch == "_" for ch in tag[1:-1]) and not tag[1:2].isdigit():
                close = expr.find(tag, end + 1)
                if close < 0:
                    raise FilterError(f"The table filter {text!r} has an unclosed dollar quote.")
                i = close + len(tag)
                continue
        if (c.isalpha() or c == "_") and not (i > 0 and _is_ident_char(expr[i - 1])):
            j = i
            while j < n and _is_ident_char(expr[j]):
                j += 1
            _deny(expr[i:j].lower(), text)
            i = j
            continue
        if c == ";":
            raise FilterError("The table filter must be a single WHERE condition, without ';'.")
        if expr.startswith("--", i) or expr.startswith("/*", i):
            raise FilterError("The table filter must not contain SQL comments.")
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise FilterError(f"The table filter {text!r} has an unmatched ')'.")
        i += 1
    if depth != 0:
        raise FilterError(f"The table filter {text!r} has an unmatched '('.")
    return expr
