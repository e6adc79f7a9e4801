"""The API's remembered role checks, against the test cluster's real nodes.

A caller who keeps polling is never made to wait while the nodes are asked
again about its role (that happens in the background, ahead of the answer's
expiry), and a caller taken out of ``ace_callers`` is still refused within
``API_ROLE_CHECK_SECONDS``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from api_helpers import run_sql

from ace_api.rest.callers import CallerGate
from ace_shared.config import load_settings
from ace_shared.errors import PermissionDeniedError
from ace_shared.nodes.callerrole import CALLERS_GROUP, check_caller_role
from ace_shared.nodes.cluster import load_cluster

ROLE = "gate_poller"
SECONDS = 2


@pytest.fixture()
def role(pg_cluster: Any) -> str:
    pg_cluster.serve_role(ROLE)
    return ROLE


def test_a_polling_caller_never_waits_for_the_nodes_and_a_revoked_one_is_refused_in_time(
        pg_cluster: Any, role: str) -> None:
    settings = load_settings(environ={**os.environ,
                                      "ACE_API_ROLE_CHECK_SECONDS": str(SECONDS)})
    cluster = load_cluster(settings.cluster_dir, "testclus")
    asked_by: list[str] = []  # the thread that asked the nodes, each time

    def on_nodes(cluster_name: str, name: str) -> None:
        asked_by.append(threading.current_thread().name)
        check_caller_role(cluster, name, settings)

    gate = CallerGate(settings, on_nodes)
    gate.require("testclus", role)  # the first request waits for the nodes' answer
    assert asked_by == [threading.current_thread().name]

    # polls for three times the answer's life: the nodes are asked again, never by a poll
    until = time.monotonic() + 3 * SECONDS
    while time.monotonic() < until:
        gate.require("testclus", role)
        time.sleep(0.05)
    assert len(asked_by) >= 3, asked_by
    assert asked_by[1:].count(threading.current_thread().name) == 0, asked_by

    try:
        for i in (0, 2):
            run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                    f"REVOKE {CALLERS_GROUP} FROM {role}")
        revoked = time.monotonic()
        with pytest.raises(PermissionDeniedError, match="not a member of ace_callers"):
            while time.monotonic() < revoked + SECONDS + 5:
                gate.require("testclus", role)
                time.sleep(0.05)
        assert time.monotonic() - revoked <= SECONDS + 1  # (the last question's own time)
    finally:
        for i in (0, 2):
            run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                    f"GRANT {CALLERS_GROUP} TO {role}")
