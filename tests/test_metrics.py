"""The fleet's Prometheus metrics, scraped from the API after real work on a real fleet.

A table-diff finds two rows differing, a repair fixes them, and a scrape of
``/metrics`` (by a certificate in ``API_METRICS_CNS``) shows what a dashboard
would: jobs by type and state, their durations, the rows compared and
differing for that table, and the rows the repair changed. Other certificates
are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import ApiCerts, ApiServer, make_certs
from diff_helpers import labelled_items
from fleet_helpers import Fleet, free_port
from prometheus_client.parser import text_string_to_metric_families

SCRAPER, ADMIN, CALLER = "prometheus", "metrics_admin", "metrics_caller"
TABLE = "mx_items"


@pytest.fixture(scope="module")
def api(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    pki: ApiCerts = make_certs(tmp_path_factory.mktemp("metrics-certs"))
    env = {**fleet.env, "ACE_API_METRICS_CNS": SCRAPER, "ACE_API_ADMIN_CNS": ADMIN}
    server = ApiServer(env, pki, free_port(), fleet.workdir / "api-metrics.log")
    server.start()
    yield server
    server.stop()


def _samples(api: ApiServer, cn: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.session(cn).get(api.url("/metrics"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def test_a_scrape_shows_the_diff_and_the_repair(fleet: Fleet, pg_cluster: Any,
                                                api: ApiServer) -> None:
    table = labelled_items(pg_cluster, TABLE, 400, "id IN (5, 50)")
    diff = fleet.ace("table-diff", "testclus", table)
    assert diff.returncode == 1, diff.stderr
    found = re.search(r"(?:Diffs|Diff summary) written to (\S+)", diff.stdout)
    assert found, diff.stdout
    repair = fleet.ace("table-repair", "testclus", table, f"--diff-file={found.group(1)}",
                       "--source-of-truth=n1")
    assert repair.returncode == 0, repair.stderr

    got = _samples(api, SCRAPER)
    where = (("cluster", "testclus"), ("table", table))
    assert got[("ace_rows_compared_total", where)] == 400
    assert got[("ace_rows_differing", where)] == 2
    assert got[("ace_repair_rows_total", (("action", "updated"), *where))] == 2
    finished = (("state", "completed"), ("type", "table-diff"))
    assert got[("ace_tasks_finished_total", finished)] >= 1
    assert got[("ace_tasks_finished_total", (("state", "completed"),
                                             ("type", "table-repair")))] >= 1
    assert got[("ace_tasks", finished)] >= 1
    count = got[("ace_task_duration_seconds_count", (("type", "table-diff"),))]
    assert count >= 1
    assert got[("ace_task_duration_seconds_bucket", (("le", "+Inf"), ("type", "table-diff")))] \
        == count
    assert got[("ace_task_duration_seconds_sum", (("type", "table-diff"),))] > 0

    # the diff again, now that the repair is in: the table's differing rows go to 0
    again = fleet.ace("table-diff", "testclus", table)
    assert again.returncode == 0, again.stdout
    now = _samples(api, ADMIN)  # admins read them too
    assert now[("ace_rows_differing", where)] == 0
    assert now[("ace_rows_compared_total", where)] == 800


def test_other_certificates_may_not_read_the_metrics(api: ApiServer) -> None:
    response = api.session(CALLER).get(api.url("/metrics"), timeout=10)
    assert response.status_code == 403
    assert response.json() == {"error": f"The certificate {CALLER} may not read the metrics; "
                                        "ask the operator to add it to API_METRICS_CNS."}


def test_the_grafana_dashboard_charts_metrics_the_api_serves(
        api: ApiServer, repo_root: Any) -> None:
    import json
    dashboard = json.loads((repo_root / "deploy" / "grafana" / "ace-dashboard.json").read_text())
    charted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bace_[a-z_]+", target["expr"])}
    response = api.session(SCRAPER).get(api.url("/metrics"), timeout=10)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    served = {family.name + suffix for family in text_string_to_metric_families(response.text)
              for suffix in suffixes.get(family.type, ("",))}  # with samples or not (yet)
    assert charted and charted <= served, charted - served
