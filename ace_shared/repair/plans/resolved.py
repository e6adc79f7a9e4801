"""The resolved-plan file: what a plan decided for each key, to review and then apply as is.

JSON Lines: the first line is the header (format, cluster, database, table,
diff file, nodes, key, columns with their types, the plan itself, and per rule
how many keys it matched and what it writes on each node); then one line per
key::

    {"key": ["42"], "rule": "rule 1 \\"orders\\"", "seen": {"n1": {...}, "n2": null},
     "write": {"n2": {...}}, "note": "..."}

``seen`` is each node's row as the diff file showed it (``null``: the node
lacked the key); ``write`` holds only the nodes that change: a row to write,
or ``null`` to delete. ``--apply-plan`` writes exactly these rows, after
checking that every node still holds its ``seen`` row.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ace_shared.errors import RepairPlanError

FORMAT = "ace-resolved-repair-plan/1"
SAMPLE_KEYS = 5


@dataclass
class RuleCount:
    """How many keys a rule decided, and what it writes on each node."""

    label: str
    action: str
    matched: int = 0
    ties: int = 0
    ties_skipped: int = 0
    writes: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[list[str]] = field(default_factory=list)

    def add(self, node: str, what: str, key: tuple[str, ...]) -> None:
        per = self.writes.setdefault(node, {"insert": 0, "update": 0, "delete": 0})
        per[what] += 1
        if len(self.samples) < SAMPLE_KEYS and list(key) not in self.samples:
            self.samples.append(list(key))

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.label, "action": self.action, "matched": self.matched,
                "ties": self.ties, "ties_skipped": self.ties_skipped, "writes": self.writes,
                "sample_keys": self.samples}


def write_header(out: Path, header: dict[str, Any], body: Path) -> None:
    """The header line, then the key lines from ``body``; written under a temporary name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, ensure_ascii=False) + "\n")
        with open(body, encoding="utf-8") as src:
            shutil.copyfileobj(src, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)
    body.unlink(missing_ok=True)


def read_header(path: Path) -> dict[str, Any]:
    """The header of a resolved plan; one sentence when the file is not one."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except OSError as exc:
        raise RepairPlanError(f"The resolved plan {path} cannot be read "
                              f"({exc.strerror or exc}); pass the file --plan-out wrote.") from None
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RepairPlanError(f"The file {path} is not a resolved repair plan; pass the file "
                              "a dry run's --plan-out wrote.")
    return header


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The key lines of a resolved plan, one at a time."""
    with open(path, encoding="utf-8") as fh:
        fh.readline()
        for n, line in enumerate(fh, start=2):
            try:
                item = json.loads(line)
            except ValueError:
                raise RepairPlanError(f"The resolved plan {path}, line {n}, is not JSON; "
                                      "write it again with a dry run's --plan-out.") from None
            if not isinstance(item, dict) or not isinstance(item.get("key"), list):
                raise RepairPlanError(f"The resolved plan {path}, line {n}, is not a key's "
                                      "line; write it again with a dry run's --plan-out.")
            yield item
