"""What a new user meets in the first hour: output that reads alike everywhere, hints, refusals.

Every command prints sentences, ``--json`` for machines and ``--quiet`` the path
alone; a report asked for is written when the nodes match too; counts and lists
read as a person writes them; a mixed-case name typed without quotes gets its
quoted form suggested; the API refuses a bad filter when it is submitted and
shows a remote caller none of the server's paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_helpers import api_client, as_caller
from diff_helpers import (
    CLUSTER,
    as_admin_on_every_node,
    execute,
    mtree_init,
    on_every_node,
    run_ace,
)
from flask.testing import FlaskClient

from ace_shared.checks.html import write_html
from ace_shared.config import Settings, load_settings
from ace_shared.tasks.ids import is_task_id, new_task_id
from ace_shared.words import and_list, nodes_phrase, plural

ROLE = "fh_caller"


@pytest.fixture(scope="module")
def tables(pg_cluster: Any) -> Iterator[Any]:
    """fh_same (alike everywhere), fh_diff (one row differs on n2), a mixed-case table and
    schema, an enum and a user-defined type column for the filter checks."""
    as_admin_on_every_node(pg_cluster, [
        f"DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$", f"GRANT {ROLE} TO ace"])
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS public.fh_same, public.fh_diff, public.\"FhMixed\"",
        "DROP SCHEMA IF EXISTS \"FhSchema\" CASCADE",
        "DROP TYPE IF EXISTS public.fh_mood, public.fh_pair",
        "CREATE TYPE public.fh_mood AS ENUM ('calm', 'busy')",
        "CREATE TYPE public.fh_pair AS (a int, b int)",
        "CREATE TABLE public.fh_same (id int PRIMARY KEY, mood public.fh_mood NOT NULL, "
        "pair public.fh_pair)",
        "INSERT INTO public.fh_same SELECT i, 'calm', ROW(i, i)::public.fh_pair FROM generate_series(1, 300) i",
        "CREATE TABLE public.fh_diff (id int PRIMARY KEY, v text)",
        "INSERT INTO public.fh_diff SELECT i, 'v' || i FROM generate_series(1, 300) i",
        "CREATE TABLE public.\"FhMixed\" (id int PRIMARY KEY)",
        "CREATE SCHEMA \"FhSchema\"",
        f"GRANT SELECT ON public.fh_same, public.fh_diff TO {ROLE}",
    ])
    execute(pg_cluster.node_dsn(1), ["UPDATE public.fh_diff SET v = 'changed' WHERE id = 7"])
    pg_cluster.serve_role(ROLE)
    yield pg_cluster
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS public.fh_same, public.fh_diff, public.\"FhMixed\"",
        "DROP SCHEMA IF EXISTS \"FhSchema\" CASCADE",
        "DROP TYPE IF EXISTS public.fh_mood, public.fh_pair"])


# ----- sentences, --json, --quiet -------------------------------------------------------

def test_quiet_prints_the_path_alone(tables: Any) -> None:
    run = run_ace("table-diff", CLUSTER, "public.fh_diff", "--quiet")
    assert run.code == 1, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and Path(lines[0]).is_file() and lines[0].endswith(".json"), run.stdout


def test_json_prints_the_result_for_machines(tables: Any) -> None:
    run = run_ace("table-diff", CLUSTER, "public.fh_diff", "--json")
    assert run.code == 1, run.stderr
    summary = json.loads(run.stdout)
    assert summary["diff_rows_by_pair"] == {"n1/n2": 1, "n2/n3": 1}
    checks = run_ace("schema-diff", CLUSTER, "public", "--nodes=n1,n2", "--json")
    assert checks.code in (0, 1), checks.stderr
    assert json.loads(checks.stdout)["command"] == "schema-diff"


def test_one_row_is_said_in_the_singular(tables: Any) -> None:
    run = run_ace("table-diff", CLUSTER, "public.fh_diff")
    assert "n1/n2: 1 row differs" in run.stdout, run.stdout
    assert "n1/n3" not in run.stdout  # a pair that agrees is not listed as differing


def test_html_on_identical_tables_writes_a_page_that_says_match(tables: Any) -> None:
    run = run_ace("table-diff", CLUSTER, "public.fh_same", "--output=html")
    assert run.code == 0, run.stderr
    assert "TABLES MATCH: public.fh_same is the same on n1, n2 and n3 (300 rows checked)." \
        in run.stdout
    found = re.search(r"^Report written to (\S+\.html)$", run.stdout, re.M)
    assert found, run.stdout
    assert "All nodes match." in Path(found.group(1)).read_text()


def test_mtree_commands_speak_in_sentences_and_json_on_request(tables: Any) -> None:
    assert mtree_init().code == 0
    spoken = run_ace("mtree", "init", CLUSTER)
    assert spoken.code == 0, spoken.stderr
    assert spoken.stdout == "Merkle tree schema ace_mtree is ready on nodes n1, n2 and n3.\n"
    as_json = run_ace("mtree", "init", CLUSTER, "--json")
    assert json.loads(as_json.stdout)["nodes"] == ["n1", "n2", "n3"]


def test_a_tree_never_built_is_not_built_again(tables: Any) -> None:
    assert mtree_init().code == 0
    run = run_ace("mtree", "table-diff", CLUSTER, "public.fh_diff")
    assert run.code == 2
    assert "no Merkle tree" in run.stderr and "build it with 'ace mtree build'" in run.stderr
    assert "again" not in run.stderr


def test_schema_diff_page_shows_times_in_utc(tables: Any) -> None:
    run = run_ace("schema-diff", CLUSTER, "public", "--output=html")
    assert run.code in (0, 1), run.stderr
    page = Path(re.search(r"^Report written to (\S+)$", run.stdout, re.M).group(1)).read_text()
    started = re.search(r"<dt>Started</dt><dd>([^<]*)</dd>", page)
    assert started and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", started.group(1))


# ----- hints ----------------------------------------------------------------------------

def test_an_unquoted_mixed_case_table_gets_its_quoted_form(tables: Any) -> None:
    run = run_ace("table-diff", CLUSTER, "public.FhMixed")
    assert run.code == 2
    assert 'did you mean public."FhMixed"?' in run.stderr
    assert "(in a shell: 'public.\"FhMixed\"')" in run.stderr


def test_an_unquoted_mixed_case_schema_gets_its_quoted_form(tables: Any) -> None:
    run = run_ace("schema-diff", CLUSTER, "FhSchema")
    assert run.code == 2
    assert 'did you mean "FhSchema"?' in run.stderr, run.stderr


def test_a_name_with_a_space_typed_without_quotes_is_shown_quoted(tables: Any) -> None:
    run = run_ace("table-diff", CLUSTER, "Sales.Order Items")
    assert run.code == 2
    assert "\"Sales\".\"Order Items\" (in a shell: '\"Sales\".\"Order Items\"')" in run.stderr


# ----- words, ids, pages ----------------------------------------------------------------

def test_counts_and_lists_read_as_written() -> None:
    assert plural(1, "difference") == "1 difference"
    assert plural(1204, "row") == "1,204 rows"
    assert plural(0, "set") == "0 sets"
    assert and_list(["n1", "n2", "n3"]) == "n1, n2 and n3"
    assert nodes_phrase(["n1"]) == "node n1"
    assert nodes_phrase(["n1", "n2", "n3"]) == "nodes n1, n2 and n3"


def test_repair_and_rerun_ids_differ_and_old_ids_stay_readable() -> None:
    repair, rerun = new_task_id("table-repair"), new_task_id("table-rerun")
    assert repair.startswith("tr_") and rerun.startswith("rr_")
    assert is_task_id(rerun) and is_task_id("tr_20240315_123456_x7k2ab")


def _repset_result() -> dict[str, Any]:
    """A repset-diff result as run.py writes it: one table differs between n1 and n2 only,
    one is in the set on n1 and n2 but not on n3, one is identical."""
    return {
        "task_id": "rd_20240315_000000_abcdef", "command": "repset-diff",
        "cluster_name": "demo", "database": "acedb", "repset_name": "default",
        "nodes": ["n1", "n2", "n3"], "systems": {}, "nodes_without_set": [],
        "membership_differences": [{"table": "public.b", "in_set_on": ["n1", "n2"],
                                    "not_in_set_on": ["n3"]}],
        "tables": [
            {"table": "public.a", "outcome": "differs", "diff_file": "/o/d.json",
             "diff_rows_by_pair": {"n1/n2": 3, "n1/n3": 0, "n2/n3": 0}},
            {"table": "public.b", "outcome": "identical",
             "membership": {"in_set_on": ["n1", "n2"], "not_in_set_on": ["n3"]}},
            {"table": "public.c", "outcome": "identical"},
        ],
        "start_time": "2024-03-15T12:00:00+00:00", "time_taken": 1.0, "exit_code": 1,
        "result_file": "/o/r.json",
    }


def test_repset_page_counts_table_and_membership_differences_alike(tmp_path: Path) -> None:
    page_path = tmp_path / "r.html"
    write_html(page_path, _repset_result())
    page = page_path.read_text()
    assert "2 differences between n1, n2 and n3." in page
    pairs = dict(re.findall(r"<td>(?:<a [^>]*>)?(n\d / n\d)(?:</a>)?</td><td class=\"n\">([^<]*)</td>",
                            page))
    assert pairs == {"n1 / n2": "1", "n1 / n3": "1", "n2 / n3": "1"}
    assert "Started</dt><dd>2024-03-15 12:00:00 UTC" in page


# ----- the API --------------------------------------------------------------------------

def _client(settings: Settings) -> FlaskClient:
    return api_client(settings)


def _post(client: FlaskClient, path: str, body: dict[str, Any], cn: str = ROLE) -> Any:
    return client.post(path, json=body, environ_base=as_caller(cn))


@pytest.fixture()
def api_settings(tmp_path: Path) -> Settings:
    """The session cluster's settings (ACE's certificate); a broker nobody listens on."""
    return load_settings().with_overrides(
        API_RATE_LIMIT_STORAGE="memory://", DATABASE_URL=f"sqlite:///{tmp_path / 'tasks.db'}",
        BROKER_URL="redis://127.0.0.1:1/0", RESULT_BACKEND="redis://127.0.0.1:1/1",
        TASK_SIGNING_KEY="ab" * 32)


@pytest.mark.parametrize(("table_filter", "said"), [
    ("nosuch = 1", "names column nosuch, which table public.fh_same does not have on node n1; "
                   "its columns are id, mood, pair"),
    ("pair IS NOT NULL", "filter on columns of built-in types or enums"),
    ("id = = 1", "write one condition as it would follow WHERE"),
])
def test_the_api_refuses_a_bad_filter_when_it_is_submitted(
        tables: Any, api_settings: Settings, table_filter: str, said: str) -> None:
    answer = _post(_client(api_settings), "/ace/table-diff",
                   {"cluster_name": CLUSTER, "table_name": "public.fh_same",
                    "table_filter": table_filter})
    assert answer.status_code == 400, answer.json
    assert said in answer.json["error"]


def test_the_api_lets_an_enum_filter_through_to_the_queue(tables: Any,
                                                          api_settings: Settings) -> None:
    answer = _post(_client(api_settings), "/ace/table-diff",
                   {"cluster_name": CLUSTER, "table_name": "public.fh_same",
                    "table_filter": "mood = 'calm'"})
    assert answer.status_code == 503 and "task queue" in answer.json["error"], answer.json


def test_the_api_names_an_unknown_cluster_without_the_servers_paths(
        api_settings: Settings) -> None:
    answer = _post(_client(api_settings), "/ace/table-diff",
                   {"cluster_name": "nosuch", "table_name": "public.t"})
    assert answer.status_code == 404
    error = answer.json["error"]
    assert "Cluster nosuch is not defined" in error
    assert str(api_settings.cluster_dir) not in error and "/" not in error


def test_a_diff_file_outside_the_output_dir_is_refused_without_the_dir(
        tables: Any, api_settings: Settings) -> None:
    answer = _post(_client(api_settings), "/ace/table-repair",
                   {"cluster_name": CLUSTER, "table_name": "public.fh_diff",
                    "diff_file": "/etc/hosts", "source_of_truth": "n1"})
    assert answer.status_code == 400
    error = answer.json["error"]
    assert "outside the ACE output directory" in error and "task id" in error
    assert str(api_settings.output_dir) not in error


@pytest.mark.parametrize("text", ["{not json", '{"cluster_name": "broken", "node_groups": 7}'])
def test_a_broken_cluster_file_is_reported_without_its_path(
        api_settings: Settings, tmp_path: Path, text: str) -> None:
    (tmp_path / "clusters" / "broken").mkdir(parents=True)
    (tmp_path / "clusters" / "broken" / "broken.json").write_text(text)
    settings = api_settings.with_overrides(CLUSTER_DIR=str(tmp_path / "clusters"))
    answer = _post(_client(settings), "/ace/table-diff",
                   {"cluster_name": "broken", "table_name": "public.t"})
    assert answer.status_code == 404
    assert answer.json["error"].startswith("The definition of cluster broken on this server is ")
    assert "/" not in answer.json["error"]
