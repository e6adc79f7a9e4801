"""Bounded abuse by callers: filter limits, against a real ``ace api`` and the CLI.

A filter over the size or nesting limit is refused in one sentence (400 at the
API, exit 2 at the CLI) before PostgreSQL's parser sees it: today a 120 KB
filter kills the API worker inside ``pglast`` and a 3,000-deep one is a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import requests
from api_helpers import ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from fleet_helpers import Fleet, free_port

from ace_shared.config import load_settings
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import node_targets
from ace_shared.nodes.sessions import NodeSessions

CALLER = "lim_caller"
TABLE = "public.lim_items"

HUGE = "id = 1 OR " * 12_000 + "id = 2"  # about 120 KB
DEEP = "(" * 3000 + "id = 1" + ")" * 3000
TOO_DEEP = [
    ("parentheses", "(" * 40 + "id = 1" + ")" * 40),
    ("brackets", "id = ANY(" + "ARRAY[" * 40 + "1" + "]" * 40 + ")"),
    ("functions", "id = " + "abs(" * 40 + "1" + ")" * 40),
    ("an operator chain", "id = " + " + ".join(["1"] * 1000)),
    ("a NOT chain", "NOT " * 800 + "id = 1"),
]


@pytest.fixture(scope="module")
def table(pg_cluster: Any) -> str:
    pg_cluster.serve_role(CALLER)
    for i in range(3):
        run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                f"DROP TABLE IF EXISTS {TABLE}",
                f"CREATE TABLE {TABLE} (id int PRIMARY KEY, label text)",
                f"INSERT INTO {TABLE} SELECT g, 'item ' || g FROM generate_series(1, 100) g",
                f"GRANT SELECT ON {TABLE} TO {CALLER}")
    return TABLE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    return make_certs(tmp_path_factory.mktemp("limits-certs"))


@pytest.fixture(scope="module")
def api(fleet: Fleet, pki: ApiCerts, table: str) -> Iterator[ApiServer]:
    # one worker process: a crash inside the parser would take the whole API down
    server = ApiServer(fleet.env, pki, free_port(), fleet.workdir / "api-limits.log",
                       workers=1, threads=2)
    server.start()
    yield server
    server.stop()


def _diff(api: ApiServer, table_filter: str) -> requests.Response:
    return api.session(CALLER).post(api.url("/ace/table-diff"), timeout=60, json={
        "cluster_name": "testclus", "table_name": TABLE, "table_filter": table_filter})


def _one_sentence(text: str) -> bool:
    return text.endswith(".") and ". " not in text and "Traceback" not in text


@pytest.mark.parametrize("table_filter, said", [(HUGE, "bytes"), (DEEP, "bytes")],
                         ids=["120KB", "3000-deep"])
def test_the_api_refuses_an_oversized_filter_with_400_and_keeps_serving(
        api: ApiServer, table_filter: str, said: str) -> None:
    response = _diff(api, table_filter)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert said in error and "table filter" in error and _one_sentence(error), error
    assert len(error) < 300
    # the same worker answers the next request
    ok = _diff(api, "id < 50")
    assert ok.status_code == 200, ok.text
    doc, _ = wait_for_final(api.session(CALLER),
                            api.url(f"/ace/task-status/{ok.json()['task_id']}"))
    assert doc["status"] == "COMPLETED", doc.get("error")


@pytest.mark.parametrize("what, table_filter", TOO_DEEP, ids=[w for w, _ in TOO_DEEP])
def test_the_api_refuses_a_filter_nested_too_deep(api: ApiServer, what: str,
                                                  table_filter: str) -> None:
    response = _diff(api, table_filter)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert "levels" in error and _one_sentence(error), error


def test_a_filter_within_the_limits_is_accepted(api: ApiServer) -> None:
    nested = "(" * 10 + "id = 1" + ")" * 10 + " OR " + " OR ".join(
        f"id = {i}" for i in range(2, 250))
    assert len(nested.encode()) < 4096
    response = _diff(api, nested)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("table_filter", [HUGE, DEEP], ids=["120KB", "3000-deep"])
def test_the_cli_refuses_an_oversized_filter_with_exit_2(fleet: Fleet, table: str,
                                                         table_filter: str) -> None:
    run = fleet.ace("table-diff", "testclus", TABLE, "--table-filter", table_filter)
    assert run.returncode == 2, run.stderr[-500:]
    last = run.stderr.strip().splitlines()[-1]
    assert "table filter" in last and "Traceback" not in run.stderr, run.stderr[-500:]


# --- "Check the table filter." only when there is one -----------------------------------------


def test_a_filter_error_hint_appears_only_when_a_filter_was_given(fleet: Fleet,
                                                                  table: str) -> None:
    with_filter = fleet.ace("table-diff", "testclus", TABLE, "--table-filter",
                            "label::int > 0")
    assert with_filter.returncode != 0
    assert "Check the table filter." in with_filter.stderr, with_filter.stderr[-500:]

    settings = load_settings()
    cluster = load_cluster(settings.cluster_dir, "testclus")
    sessions = NodeSessions(node_targets(cluster, cluster.nodes[:1], None, settings))
    try:
        with pytest.raises(AceError) as caught:
            sessions.on_one("n1", lambda cur: cur.execute(
                f"SELECT label::int FROM {TABLE}"))  # no filter: the same kind of error
    finally:
        sessions.close()
    assert "22P02" in caught.value.message and "filter" not in caught.value.message, \
        caught.value.message
    assert not isinstance(caught.value.__cause__, type(None)) and isinstance(
        caught.value.__cause__, psycopg2.Error)
