"""The fleet's Prometheus metrics: counted in Redis by every worker, served by the API.

Workers run on many hosts and in many processes; a scrape of one of them
would see a sliver. So each job's metrics (:mod:`ace_shared.tasks.metrics`) are
added, when the job finishes, to a few Redis hashes every host shares, and
:class:`FleetCollector` turns those hashes (and the task store's counts of
tasks in each state) into metrics whenever Prometheus scrapes the API's
``/metrics``. Counters live as long as Redis keeps its data: a Redis restarted
without persistence starts them from zero, which Prometheus reads as a reset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from ace_shared.config import Settings
from ace_shared.tasks.metrics import DURATION_BUCKETS, Finished

FINISHED_KEY = "ace:metrics:finished"
DURATION_KEY = "ace:metrics:duration"
COMPARED_KEY = "ace:metrics:rows_compared"
DIFFERING_KEY = "ace:metrics:rows_differing"
REPAIRED_KEY = "ace:metrics:rows_repaired"

log = logging.getLogger(__name__)


def _field(*labels: str) -> str:
    return json.dumps(labels)


def _labels(raw: bytes | str) -> list[str]:
    return [str(v) for v in json.loads(raw)]


def record(client: Any, done: Finished) -> None:
    """Add one finished job's metrics to the fleet's counters, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(FINISHED_KEY, _field(done.task_type, done.state), 1)
    if done.seconds is not None:
        bucket = next((i for i, bound in enumerate(DURATION_BUCKETS) if done.seconds <= bound),
                      len(DURATION_BUCKETS))
        pipe.hincrby(DURATION_KEY, _field(done.task_type, str(bucket)), 1)
        pipe.hincrbyfloat(DURATION_KEY, _field(done.task_type, "sum"), done.seconds)
    for (cluster, table), rows in done.compared.items():
        pipe.hincrby(COMPARED_KEY, _field(cluster, table), rows)
    for (cluster, table), rows in done.differing.items():
        pipe.hset(DIFFERING_KEY, _field(cluster, table), rows)
    for (cluster, table, action), rows in done.repaired.items():
        pipe.hincrby(REPAIRED_KEY, _field(cluster, table, action), rows)
    pipe.execute()


class FleetCollector(Collector):
    """Reads the fleet's metrics from Redis and the task store at each scrape."""

    def __init__(self, settings: Settings, client: Any, store: Any) -> None:
        self.settings, self.client, self.store = settings, client, store

    def collect(self) -> Iterator[Any]:
        pipe = self.client.pipeline(transaction=False)
        for key in (FINISHED_KEY, DURATION_KEY, COMPARED_KEY, DIFFERING_KEY, REPAIRED_KEY):
            pipe.hgetall(key)
        finished, durations, compared, differing, repaired = pipe.execute()

        tasks = GaugeMetricFamily("ace_tasks", "Tasks in the task store, by type and state.",
                                  labels=["type", "state"])
        for (task_type, state), count in sorted(self.store.counts().items()):
            tasks.add_metric([task_type, state.lower()], count)
        yield tasks

        ended = CounterMetricFamily("ace_tasks_finished", "Jobs finished, by type and outcome.",
                                    labels=["type", "state"])
        for raw, count in sorted(finished.items()):
            ended.add_metric(_labels(raw), int(count))
        yield ended

        yield self._durations(durations)

        rows = CounterMetricFamily("ace_rows_compared", "Rows a table-diff compared, per table.",
                                   labels=["cluster", "table"])
        for raw, count in sorted(compared.items()):
            rows.add_metric(_labels(raw), int(count))
        yield rows

        diff = GaugeMetricFamily("ace_rows_differing",
                                 "Rows that differed in the latest diff of each table.",
                                 labels=["cluster", "table"])
        for raw, count in sorted(differing.items()):
            diff.add_metric(_labels(raw), int(count))
        yield diff

        fixed = CounterMetricFamily("ace_repair_rows", "Rows repairs changed, per table and "
                                    "action (inserted, updated, deleted).",
                                    labels=["cluster", "table", "action"])
        for raw, count in sorted(repaired.items()):
            fixed.add_metric(_labels(raw), int(count))
        yield fixed

    @staticmethod
    def _durations(raw: dict[bytes, bytes]) -> HistogramMetricFamily:
        family = HistogramMetricFamily("ace_task_duration_seconds",
                                       "How long jobs took, from start to outcome, by type.",
                                       labels=["type"])
        by_type: dict[str, dict[str, float]] = {}
        for key, value in raw.items():
            task_type, part = _labels(key)
            by_type.setdefault(task_type, {})[part] = float(value)
        bounds = [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
        for task_type, parts in sorted(by_type.items()):
            running, buckets = 0.0, []
            for i, bound in enumerate(bounds):
                running += parts.get(str(i), 0.0)
                buckets.append((bound, running))
            family.add_metric([task_type], buckets, parts.get("sum", 0.0))
        return family
