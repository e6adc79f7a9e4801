"""Where each differing row came from: its commit time and origin, and the filters on them.

Every row a diff reports carries, per node, the commit time of the transaction
that last wrote it and the node that transaction came from (the reserved
fields of :mod:`ace_shared.difffile.format`). They are read with the row, in the
same query (:func:`queries.fetch_rows_in_order`), from
``pg_xact_commit_timestamp_origin(xmin)``; the origin's name is turned into a
node of the cluster through the replication catalogs
(:mod:`ace_shared.replication.origins`), origin 0 being the node itself. The
hashes and the compare never see them.

``--against-origin NODE`` keeps a differing row only when some compared node's
current version came from NODE; ``--until TIME`` only when that version was
committed at or before TIME (a version whose commit time is unknown, e.g. a
frozen or pre-tracking row, is kept: its ``_ace_commit_ts`` is null). Both are
applied where the rows are fetched, so only rows that differ *and* match are
ever written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ace_shared.errors import BadOptionError
from ace_shared.options import TEXT, Option

AGAINST_ORIGIN = Option(
    "against_origin", TEXT,
    "Report only rows whose current version on some compared node came from this node "
    "(the failed node, in a recovery).")
UNTIL = Option(
    "until", TEXT,
    "Report only rows committed at or before this time (ISO 8601; UTC if no zone is given); "
    "rows of unknown commit time are kept.")
ORIGIN_OPTIONS = (AGAINST_ORIGIN, UNTIL)

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f+00"
TRACKING_OFF_NOTE = ("track_commit_timestamp is off on {nodes}: the rows' commit times and "
                     "origins there are unknown (null).")

Meta = tuple[str | None, str | None]  # (commit time as UTC text, origin node)


def utc_text(moment: datetime) -> str:
    """A moment as the diff file writes commit times: ``2026-12-07 14:51:10.123456+00``."""
    return moment.astimezone(timezone.utc).strftime(TS_FORMAT)


def parse_until(text: str | None, label: str = "until") -> str | None:
    """``--until`` as the diff file's UTC text (so the two compare as text), or None."""
    if text is None or not text.strip():
        return None
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadOptionError(f"{label} {raw!r} is not a time; write it like "
                             "2026-12-07T14:51:10+00:00.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return utc_text(moment)


def check_origin_node(node: str | None, cluster_nodes: list[str], label: str) -> str | None:
    """``--against-origin`` must name a node of the cluster (it may be one not compared)."""
    if node is None or not node.strip():
        return None
    node = node.strip()
    if node not in cluster_nodes:
        raise BadOptionError(f"{label} {node} is not a node of the cluster (it has: "
                             f"{', '.join(cluster_nodes)}); name the node the rows came from.")
    return node


@dataclass(frozen=True)
class OriginFilter:
    """``--against-origin`` and ``--until`` together; empty keeps every row."""

    against_origin: str | None = None
    until: str | None = None

    @property
    def active(self) -> bool:
        return self.against_origin is not None or self.until is not None

    def version_matches(self, meta: Meta) -> bool:
        commit_ts, origin = meta
        if self.against_origin is not None and origin != self.against_origin:
            return False
        return self.until is None or commit_ts is None or commit_ts <= self.until

    def keeps(self, metas: Mapping[str, Meta | None]) -> bool:
        """Whether a differing key is reported: some node's version matches."""
        if not self.active:
            return True
        return any(m is not None and self.version_matches(m) for m in metas.values())

    def to_summary(self) -> dict[str, Any]:
        return {"against_origin": self.against_origin, "until": self.until}


def origin_node(node: str, roident: int | None, roname: str | None,
                names: Mapping[str, str]) -> str | None:
    """The cluster node an origin stands for on ``node``: itself for a local change."""
    if roident is None:
        return None
    if int(roident) == 0:
        return node
    return names.get(roname or "")
