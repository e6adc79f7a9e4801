"""The API's gate on a caller's role: checked on the nodes, remembered briefly.

Every request that queues a task, reads a task's status or names a diff file
passes :meth:`CallerGate.require` for the cluster it concerns, whether or not
``API_ALLOWED_CNS`` is set (see :mod:`ace_shared.nodes.callerrole` for what is
checked and why). A client polling its task every second would otherwise send
a query to every node per poll, so each answer, a refusal included, is kept
for ``API_ROLE_CHECK_SECONDS`` in the API process: a role made superuser, or
taken out of ``ace_callers``, is refused from at most that long afterwards.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable

from ace_shared.config import Settings
from ace_shared.errors import AceError
from ace_shared.nodes.callerrole import check_caller_role
from ace_shared.nodes.cluster import load_cluster

RoleCheck = Callable[[str, str], None]
"""``check(cluster_name, role)``: returns when the role may be served, raises otherwise."""


class CallerGate:
    """:func:`check_caller_role` with its answers cached per (cluster, role)."""

    def __init__(self, settings: Settings, check: RoleCheck | None = None) -> None:
        self.settings = settings
        self.seconds = max(0, settings.API_ROLE_CHECK_SECONDS)
        self._check = check or self._on_nodes
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str], tuple[float, AceError | None]] = {}

    def _on_nodes(self, cluster_name: str, role: str) -> None:
        check_caller_role(load_cluster(self.settings.cluster_dir, cluster_name), role,
                          self.settings)

    def require(self, cluster_name: str, role: str) -> None:
        """Raise the (remembered) refusal of ``role`` on ``cluster_name``, if any."""
        key = (cluster_name, role)
        now = time.monotonic()
        with self._lock:
            cached = self._answers.get(key)
        if cached is None or cached[0] <= now:
            refusal: AceError | None = None
            try:
                self._check(cluster_name, role)
            except AceError as exc:
                refusal = exc
            with self._lock:
                if len(self._answers) > 10000:  # many names: forget the expired ones
                    self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
                self._answers[key] = (now + self.seconds, refusal)
            cached = (0.0, refusal)
        if cached[1] is not None:  # a fresh copy: threads share the remembered one
            raise copy.copy(cached[1]).with_traceback(None)
