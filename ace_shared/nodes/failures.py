"""Turning a database error into a sentence that carries no data.

PostgreSQL's error text often quotes values: ``invalid input syntax for type
integer: "<the value>"``, a unique violation's DETAIL with the key, a function's
own ``RAISE`` text. A task's error is readable by whoever can read the task, and
a filter or a function could put any value it can read into such a message. So
a query error is reported by its SQLSTATE alone, mapped to a plain sentence;
the server's own text stays in the server's log.

Connection errors are different: they come from libpq and the server's
authentication step, before any query runs, and name only the host, the port
and the role; they are kept so the operator can act on them.
"""

from __future__ import annotations

import re

import psycopg2
import psycopg2.errorcodes

# One sentence per SQLSTATE worth naming, then one per class (the first two characters).
_BY_CODE: dict[str, str] = {
    "57014": "the statement ran past its statement timeout or was cancelled",
    "55P03": "a lock it needed was not granted within the lock timeout",
    "25P03": "the transaction sat idle past the idle-in-transaction timeout",
    "40P01": "it deadlocked with another transaction; run it again",
    "40001": "it conflicted with a concurrent transaction; run it again",
    "25006": "it tried to change data in a read-only transaction",
    "42501": "the role lacks a privilege on the table (or on something it uses)",
    "42883": "a function or operator does not exist for the given types",
    "42703": "a column it names does not exist",
    "42P01": "a table it names does not exist",
    "42601": "its SQL is not valid",
    "42804": "a value has the wrong type",
    "53100": "the node's disk is full",
    "53200": "the node ran out of memory",
    "23505": "a row would duplicate a unique key",
    "23503": "a row would break a foreign key",
    "23502": "a NOT NULL column would get a null",
    "23514": "a row would break a check constraint",
}
_BY_CLASS: dict[str, str] = {
    "22": "a value could not be converted or computed",
    "23": "a row would break a constraint",
    "42": "the statement does not fit the table or the role",
    "53": "the node ran out of a resource",
    "54": "the statement went past a server limit",
    "57": "the server cancelled it",
    "P0": "a database function raised an error",
    "XX": "the server hit an internal error",
}
ROW_SECURITY_SENTENCE = ("a row-level security policy applies to the role, so it would see only "
                         "some rows; see docs/security.md")


def sqlstate_name(code: str | None) -> str:
    """``unique_violation`` for ``23505``; the code itself when psycopg2 does not know it."""
    if not code:
        return "no SQLSTATE"
    name = psycopg2.errorcodes.lookup(code) if code in _known_codes() else None
    return f"{name.lower()}, SQLSTATE {code}" if name else f"SQLSTATE {code}"


def _known_codes() -> set[str]:
    return {v for k, v in vars(psycopg2.errorcodes).items()
            if k.isupper() and isinstance(v, str) and len(v) == 5}


def _is_row_security(exc: psycopg2.Error) -> bool:
    primary = getattr(getattr(exc, "diag", None), "message_primary", None) or ""
    return exc.pgcode == "42501" and primary.startswith("query would be affected by row-level")


def what_failed(exc: psycopg2.Error) -> str:
    """A clause saying why a statement failed, from its SQLSTATE only (never its text)."""
    code = getattr(exc, "pgcode", None)
    if code and _is_row_security(exc):
        return ROW_SECURITY_SENTENCE
    reason = _BY_CODE.get(code or "") or _BY_CLASS.get((code or "")[:2])
    if reason is None:
        reason = "the server refused it"
    return f"{reason} ({sqlstate_name(code)})"


_LIBPQ_KEEP = re.compile(r"^(FATAL|ERROR):\s*")
# Where libpq says it tried to connect: a task's error reaches remote callers, who need
# not learn the nodes' addresses (the node's name says which; the cluster file, where)
_WHERE = re.compile(r'connection to server (?:at "[^"]*"(?: \([^)]*\))?, port \d+|'
                    r'on socket "[^"]*")(?: failed)?:\s*')
_HOST_NAME = re.compile(r'(could not translate host name) "[^"]*"')


def connect_detail(exc: BaseException) -> str:
    """The first line of a connection error (libpq's or the server's authentication step),
    without the address it was trying."""
    lines = str(exc).strip().splitlines()
    text = lines[0].rstrip(".") if lines else exc.__class__.__name__
    text = _WHERE.sub("", _LIBPQ_KEEP.sub("", text).strip())
    return _LIBPQ_KEEP.sub("", _HOST_NAME.sub(r"\1", text)).strip() or "the connection failed"
