"""Counts and lists said the way a person writes them: "1 difference", "nodes n1, n2 and n3".

Every command's sentences and pages count things; one place for the plural and
the list keeps them from saying "1 differences" or "node n1, n2, n3".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 difference``, ``2 differences``, ``1,204 rows``; ``many`` for irregular plurals."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def and_list(items: Iterable[object]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = [str(i) for i in items]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def nodes_phrase(names: Iterable[object]) -> str:
    """``node n1``, ``nodes n1 and n2``, ``nodes n1, n2 and n3``."""
    words = list(names)
    return f"{'node' if len(words) == 1 else 'nodes'} {and_list(words)}"


def utc_time(value: object) -> str:
    """An ISO time as ``2024-03-15 12:34:56 UTC``, as every report shows times; other text as is."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
