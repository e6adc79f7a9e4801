"""What a finished task adds to the fleet's metrics, read from its recorded result.

One place decides what the dashboards count, from what the task store keeps
of every job: its type and outcome, how long it took, the rows a table-diff
compared and found differing (per table), and the rows a repair changed.
The workers add these to counters in Redis (:mod:`ace_workers.fleet.metrics`) and
the API serves them to Prometheus; nothing here knows either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
"""Upper bounds (seconds) of the task duration histogram: a small table to a long night."""

REPAIR_ACTIONS = ("inserted", "updated", "deleted")


@dataclass(frozen=True)
class Finished:
    """The metrics of one finished job."""

    task_type: str
    state: str
    seconds: float | None
    # (cluster, table) -> rows compared / rows differing, for each table a diff compared
    compared: dict[tuple[str, str], int] = field(default_factory=dict)
    differing: dict[tuple[str, str], int] = field(default_factory=dict)
    # (cluster, table, action) -> rows a repair changed
    repaired: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def finished(task_type: str, state: str, seconds: float | None,
             result: dict[str, Any] | None) -> Finished:
    """The metrics of a job that ended in ``state`` with ``result`` (its stored result)."""
    out = Finished(task_type, state.lower(), seconds)
    done = result or {}
    summary = done.get("summary")
    if isinstance(summary, dict) and "total_rows_checked" in summary and summary.get("table"):
        key = (str(summary.get("cluster_name") or ""), str(summary["table"]))
        out.compared[key] = _int(summary.get("total_rows_checked"))
        out.differing[key] = _int(summary.get("diff_rows"))
    if done.get("operation") == "table-repair" and not done.get("dry_run"):
        cluster, table = str(done.get("cluster_name") or ""), str(done.get("table") or "")
        for counts in (done.get("nodes") or {}).values():
            for action in REPAIR_ACTIONS:
                rows = _int((counts or {}).get(action))
                if rows:
                    key3 = (cluster, table, action)
                    out.repaired[key3] = out.repaired.get(key3, 0) + rows
    return out
