"""``GET /metrics``: the fleet's metrics for Prometheus, to the certificates allowed them.

The metrics name every cluster and table any caller diffed, so they are not
for every caller: only the admins (``API_ADMIN_CNS``) and the scrapers listed
in ``API_METRICS_CNS`` read them; anyone else gets 403. Like every request,
a scrape needs a client certificate of the ACE authority (and, where
``API_ALLOWED_CNS`` is set, one it lists). What is counted and where is
:mod:`ace_workers.fleet.metrics`'s business.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from ace_api.rest.access import AccessPolicy, names_setting
from ace_api.rest.auth import caller
from ace_shared.config import Settings
from ace_shared.tasks.store import TaskStore
from ace_workers.fleet.counters import DEFAULT_BROKER, redis_client
from ace_workers.fleet.metrics import FleetCollector

# a scrape waits this long for Redis, then says it cannot be reached
PATIENCE_SECONDS = 2.0


def _error(message: str, status: int) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def serve_metrics(app: Flask, settings: Settings, policy: AccessPolicy) -> None:
    readers = names_setting(settings.API_METRICS_CNS) | policy.admins
    made: dict[str, Any] = {}

    def registry() -> CollectorRegistry:
        if "registry" not in made:
            found = CollectorRegistry(auto_describe=False)
            found.register(FleetCollector(
                settings, redis_client(settings.BROKER_URL or DEFAULT_BROKER, PATIENCE_SECONDS),
                TaskStore.from_settings(settings)))
            made["registry"] = found
        return made["registry"]

    @app.get("/metrics")
    def metrics() -> Response:
        who = caller()
        if who not in readers:
            return _error(f"The certificate {who} may not read the metrics; ask the operator "
                          "to add it to API_METRICS_CNS.", 403)
        try:
            body = generate_latest(registry())
        except redis.RedisError as exc:
            return _error(f"The metrics are kept in the task broker (Redis), which cannot be "
                          f"reached now ({type(exc).__name__}); try again shortly.", 503)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)
