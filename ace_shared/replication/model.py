"""What every replication system tells ACE, in one shape.

Spock, pglogical and PostgreSQL's own logical replication keep the same facts
in different catalogs. The three checks (repset-diff, spock-diff, and the hints
of schema-diff) read them through this shape only, so none of them cares which
system a node runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReplicationSet:
    """A replication set (a publication, natively) and the tables it holds, as ``schema.table``."""

    name: str
    flags: dict[str, bool]
    tables: tuple[str, ...]


@dataclass(frozen=True)
class Subscription:
    """One subscription held by a node: it receives changes from ``provider``."""

    name: str
    provider: str
    enabled: bool
    sets: tuple[str, ...]
    forward_origins: tuple[str, ...]
    apply_delay: str
    status: str


@dataclass(frozen=True)
class NodeReplication:
    """Everything one node says about its replication."""

    node: str
    system: str  # spock, pglogical or native
    identity: str  # the node's own name in that system
    sets: tuple[ReplicationSet, ...]
    subscriptions: tuple[Subscription, ...]
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def set_named(self, name: str) -> ReplicationSet | None:
        return next((s for s in self.sets if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
