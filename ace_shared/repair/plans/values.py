"""A diff file's text values read as the types the summary gives their columns.

Conditions and the "greatest", "least" and "freshest" choices of a repair plan
compare values. The diff file holds every value as the text PostgreSQL printed;
comparing that text would put ``'10'`` before ``'9'`` and a timestamp written in
one zone before an earlier one written in another. So each value is read as the
Python type that orders like its column's type (numbers, booleans, dates and
times); other types compare as text, by code point, which is not the
database's collation (the documentation says so).

A literal of a plan is read the same way, as the type of the column it is
compared with, so ``nodes.n1.total > 9.5`` compares numbers.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

INTEGER = "integer"
NUMBER = "number"
BOOLEAN = "boolean"
TIMESTAMPTZ = "timestamptz"
TIMESTAMP = "timestamp"
DATE = "date"
TIME = "time"
TEXT = "text"

_INT_TYPES = {"smallint", "integer", "bigint", "int2", "int4", "int8", "oid", "smallserial",
              "serial", "bigserial"}
_NUMBER_TYPES = {"numeric", "decimal", "real", "double precision", "float4", "float8", "money"}


def value_kind(type_name: str | None) -> str:
    """How values of a column of ``type_name`` (as the diff's summary records it) compare."""
    t = (type_name or "").strip().lower()
    base = " ".join(re.sub(r"\(.*?\)", " ", t).split())  # timestamp(3) with time zone
    if base in _INT_TYPES:
        return INTEGER
    if base in _NUMBER_TYPES:
        return NUMBER
    if base in ("boolean", "bool"):
        return BOOLEAN
    if base in ("timestamp with time zone", "timestamptz"):
        return TIMESTAMPTZ
    if base in ("timestamp without time zone", "timestamp"):
        return TIMESTAMP
    if base == "date":
        return DATE
    if base in ("time without time zone", "time"):
        return TIME
    return TEXT


_TRUE = {"t", "true", "yes", "on", "1", "y"}
_FALSE = {"f", "false", "no", "off", "0", "n"}


def _timestamp(text: str) -> datetime:
    """PostgreSQL's output (``2024-01-02 03:04:05.6+00``) or ISO 8601 (``...T...Z``)."""
    try:
        return datetime.fromisoformat(text)  # most texts, on Python 3.11 and later
    except ValueError:
        pass
    t = text.strip().replace("T", " ", 1)
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    m = re.search(r"([+-]\d{2})(:?\d{2})?(:?\d{2})?$", t)
    if m and len(t) > 10 and m.start() > 10:
        # +05 -> +05:00, the form datetime.fromisoformat wants on every Python
        hh, mm = m.group(1), (m.group(2) or ":00").lstrip(":")
        t = t[:m.start()] + f"{hh}:{mm}"
    return datetime.fromisoformat(t)


def parse_value(text: str | None, kind: str) -> Any:
    """``text`` as a comparable Python value of ``kind``; ``None`` stays ``None``.

    Raises :class:`ValueError` when the text is not a value of that kind.
    """
    if text is None:
        return None
    if kind == INTEGER:
        return int(text)
    if kind == NUMBER:
        try:
            number = Decimal(text.replace(",", "").replace("$", ""))
        except InvalidOperation:
            raise ValueError(text) from None
        return number
    if kind == BOOLEAN:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(text)
    if kind == TIMESTAMPTZ:
        moment = _timestamp(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if kind == TIMESTAMP:
        return _timestamp(text).replace(tzinfo=None)
    if kind == DATE:
        return date.fromisoformat(text.strip())
    if kind == TIME:
        return time.fromisoformat(text.strip())
    return text


# An integer literal with more digits than this stays a Decimal: it compares the same, and
# turning 1e1000000 into an int would cost the API minutes of CPU for a few bytes of plan.
_INT_DIGITS = 40


def _number(value: int | float | Decimal, kind: str) -> int | Decimal:
    """A plan's number as the column's kind compares it: never truncated (1.5 is not 1 for an
    integer column), never expanded digit by digit; NaN and infinities are no values."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise ValueError(value)
    if kind == INTEGER and number.adjusted() < _INT_DIGITS:
        whole = number.to_integral_value()  # 1.000 is 1, with one digit to turn into an int
        if whole == number:
            return int(whole)
    return number


def parse_literal(value: Any, kind: str) -> Any:
    """A plan's literal (from YAML/JSON or a condition) as a value of ``kind``."""
    if value is None:
        return None
    if isinstance(value, bool):
        if kind == BOOLEAN:
            return value
        value = "true" if value else "false"
    if isinstance(value, (int, float, Decimal)) and kind in (INTEGER, NUMBER):
        return _number(value, kind)
    if isinstance(value, (datetime, date)):
        value = value.isoformat()
    return parse_value(str(value), kind)


def comparable(a: Any, b: Any) -> tuple[Any, Any]:
    """Two parsed values made comparable: an integer column against a decimal literal."""
    if isinstance(a, int) and isinstance(b, Decimal) and not isinstance(a, bool):
        return Decimal(a), b
    if isinstance(b, int) and isinstance(a, Decimal) and not isinstance(b, bool):
        return a, Decimal(b)
    return a, b
