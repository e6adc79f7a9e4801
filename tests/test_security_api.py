"""A caller gets its own role's rights and nothing more, tried as an attacker would.

Everything goes through ``ace api`` over real mutual TLS to a real worker, with
the certificate of ``sec_caller``, an ordinary role that owns some tables. Its
own function ``sec_evil`` tries every known way out of its role: ``RESET ROLE``,
``SET SESSION AUTHORIZATION``, ``set_config('role', ...)``, ``ALTER ROLE ...
SUPERUSER``, ``COPY ... TO PROGRAM`` (which would create a marker file as the
``postgres`` OS user) and reading another role's secret. The function is
reached every way the issue found: from a filter, a row-level security policy,
an ``ENABLE ALWAYS`` trigger (with and without ``fire_triggers``), an index
expression and a domain check. After each, the caller must still be an ordinary
role, the marker must not exist, and the secret must appear in no response, no
table of the caller's and no file ACE wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from api_helpers import ApiCerts, ApiServer, make_certs, run_sql, wait_for_final
from fleet_helpers import Fleet, free_port, own_fleet

CALLER = "sec_caller"
SECRET = f"S3CRET-{uuid.uuid4().hex}"
MARKER = Path(f"/tmp/ace-sec-marker-{uuid.uuid4().hex}")
NODES = range(3)

EVIL = f"""
CREATE OR REPLACE FUNCTION public.sec_evil(what text) RETURNS boolean
LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.sec_seen VALUES (what, session_user, current_user);
    BEGIN RESET ROLE; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'SET SESSION AUTHORIZATION DEFAULT'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM set_config('role', 'ace', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN PERFORM set_config('role', 'postgres', false); EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'ALTER ROLE {CALLER} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {MARKER}''';
    EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN INSERT INTO public.sec_loot SELECT secret FROM public.sec_secret;
    EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN true;
END $f$
"""

CALLER_OBJECTS = [
    "DROP TABLE IF EXISTS sec_seen, sec_loot, sec_rls, sec_trig, sec_idx, sec_dom CASCADE",
    "DROP DOMAIN IF EXISTS sec_checked",
    "CREATE TABLE sec_seen (what text, session_role text, current_role_name text)",
    "CREATE TABLE sec_loot (loot text)",
    EVIL,
    "CREATE OR REPLACE FUNCTION sec_evil_trigger() RETURNS trigger LANGUAGE plpgsql AS "
    "$f$ BEGIN PERFORM public.sec_evil('trigger'); RETURN NEW; END $f$",
    "CREATE OR REPLACE FUNCTION sec_evil_immutable(v int) RETURNS int IMMUTABLE "
    "LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.sec_evil('index'); RETURN v; END $f$",
    "CREATE OR REPLACE FUNCTION sec_evil_check(v int) RETURNS boolean IMMUTABLE "
    "LANGUAGE plpgsql AS $f$ BEGIN RETURN public.sec_evil('domain'); END $f$",
    # a policy calling the function, forced on the owner too
    "CREATE TABLE sec_rls (id int PRIMARY KEY, label text)",
    "INSERT INTO sec_rls SELECT g, 'row ' || g FROM generate_series(1, 50) g",
    "CREATE POLICY sec_rls_evil ON sec_rls USING (public.sec_evil('policy'))",
    "ALTER TABLE sec_rls ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE sec_rls FORCE ROW LEVEL SECURITY",
    # a trigger that fires even in replica mode
    "CREATE TABLE sec_trig (id int PRIMARY KEY, label text)",
    "INSERT INTO sec_trig SELECT g, 'row ' || g FROM generate_series(1, 50) g",
    "CREATE TRIGGER sec_trig_evil BEFORE INSERT OR UPDATE ON sec_trig "
    "FOR EACH ROW EXECUTE FUNCTION sec_evil_trigger()",
    "ALTER TABLE sec_trig ENABLE ALWAYS TRIGGER sec_trig_evil",
    # an index over the function
    "CREATE TABLE sec_idx (id int PRIMARY KEY, val int)",
    "CREATE INDEX sec_idx_evil ON sec_idx (sec_evil_immutable(val))",
    "INSERT INTO sec_idx SELECT g, g FROM generate_series(1, 50) g",
    # a domain whose check calls it
    "CREATE DOMAIN sec_checked AS int CHECK (sec_evil_check(VALUE))",
    "CREATE TABLE sec_dom (id int PRIMARY KEY, val sec_checked)",
    "INSERT INTO sec_dom SELECT g, g FROM generate_series(1, 50) g",
    # an ordinary table whose label holds the caller's own private value
    "DROP TABLE IF EXISTS sec_plain",
    "CREATE TABLE sec_plain (id int PRIMARY KEY, label text)",
    "INSERT INTO sec_plain SELECT g, 'OWN-' || g FROM generate_series(1, 50) g",
]


def caller_dsn(cluster: Any, i: int) -> str:
    """Log in as the caller the way ACE does: ACE's certificate, mapped to the role."""
    tls = cluster.tls
    return (f"host=127.0.0.1 port={cluster.nodes[i].port} dbname={cluster.dbname} "
            f"user={CALLER} sslmode=verify-full sslcert={tls.client_cert} "
            f"sslkey={tls.client_key} sslrootcert={tls.ca_cert}")


@pytest.fixture(scope="module")
def world(pg_cluster: Any) -> Any:
    """The caller, its objects on every node, and another role's secret beside them."""
    pg_cluster.serve_role(CALLER, repair=True)
    for i in NODES:
        run_sql(pg_cluster.admin_dsn(i, pg_cluster.dbname),
                f"ALTER ROLE {CALLER} NOSUPERUSER",
                f"GRANT CREATE ON SCHEMA public TO {CALLER}",
                "DO $$ BEGIN CREATE ROLE sec_other NOLOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                "DROP TABLE IF EXISTS sec_secret",
                "CREATE TABLE sec_secret (secret text)",
                f"INSERT INTO sec_secret VALUES ('{SECRET}')",
                "ALTER TABLE sec_secret OWNER TO sec_other",
                # Spock, if another test left its stand-in here, is usable by repairers
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'spock') "
                "THEN GRANT USAGE ON SCHEMA spock TO ace_repair; "
                "GRANT ALL ON ALL TABLES IN SCHEMA spock TO ace_repair; "
                "GRANT ALL ON ALL SEQUENCES IN SCHEMA spock TO ace_repair; END IF; END $$")
        run_sql(caller_dsn(pg_cluster, i), *CALLER_OBJECTS)
        run_sql(caller_dsn(pg_cluster, i), "TRUNCATE sec_seen, sec_loot")
    return pg_cluster


@pytest.fixture(scope="module")
def sec_fleet(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory.mktemp("sec-fleet"), ("sec1",)) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ApiCerts:
    return make_certs(tmp_path_factory.mktemp("sec-certs"))


@pytest.fixture(scope="module")
def api(sec_fleet: Fleet, certs: ApiCerts) -> Iterator[ApiServer]:
    server = ApiServer(sec_fleet.env, certs, free_port(), sec_fleet.workdir / "api.log")
    server.start()
    yield server
    server.stop()


RESPONSES: list[str] = []


def call(api: ApiServer, endpoint: str, **params: Any) -> tuple[int, dict[str, Any]]:
    """POST as the caller; for a queued task, wait for its end. Every answer is kept."""
    session = api.session(CALLER)
    response = session.post(api.url(endpoint), timeout=10,
                            json={"cluster_name": "testclus", **params})
    RESPONSES.append(response.text)
    if response.status_code != 200:
        return response.status_code, response.json()
    doc, _ = wait_for_final(session, api.url(f"/ace/task-status/{response.json()['task_id']}"),
                            timeout=120)
    RESPONSES.append(repr(doc))
    return 200, doc


def assert_still_contained(cluster: Any) -> None:
    """The caller is as it was: no superuser, no marker, no loot, no role changed."""
    assert not MARKER.exists(), "COPY TO PROGRAM ran"
    for i in NODES:
        dsn = cluster.admin_dsn(i, cluster.dbname)
        flags = run_sql(dsn, "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
                             "WHERE rolname = %s", params=(CALLER,))
        assert flags == [(False, False, False)]
        assert run_sql(dsn, "SELECT count(*) FROM sec_loot") == [(0,)]
        roles = run_sql(dsn, "SELECT DISTINCT session_role, current_role_name FROM sec_seen")
        assert set(roles) <= {(CALLER, CALLER)}, roles
    for text in RESPONSES:
        assert SECRET not in text


def seen(cluster: Any, what: str) -> int:
    return sum(run_sql(cluster.admin_dsn(i, cluster.dbname),
                       "SELECT count(*) FROM sec_seen WHERE what = %s", params=(what,))[0][0]
               for i in NODES)


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize("table_filter", [
    "U&\"set\\005fconfig\"('role', 'none', false) IS NOT NULL",
    "U&\"pg_read\\005ffile\"('/etc/passwd') IS NOT NULL",
    "U&\"\\0073ec_evil\"('filter')",
    "sec_evil('filter')",
    "public.sec_evil('filter') AND id > 0",
    "id > 0 AND (SELECT secret FROM sec_secret)::int > 0",
    "CAST((SELECT string_agg(rolpassword, ',') FROM pg_authid) AS int) > 0",
    "pg_sleep(3600) IS NULL",
])
def test_a_filter_cannot_leave_the_callers_role(api: ApiServer, world: Any,
                                                table_filter: str) -> None:
    status, doc = call(api, "/ace/table-diff", table_name="public.sec_plain",
                       table_filter=table_filter)
    assert status == 400, doc
    assert "table filter" in doc["error"]
    assert seen(world, "filter") == 0
    assert_still_contained(world)


def test_a_failing_filter_does_not_echo_the_value_it_read(api: ApiServer, world: Any) -> None:
    status, doc = call(api, "/ace/table-diff", table_name="public.sec_plain",
                       table_filter="label::int > 0")
    assert status == 200 and doc["status"] == "FAILED", doc
    assert "OWN-" not in doc["error"]
    assert "SQLSTATE 22P02" in doc["error"] and "\n" not in doc["error"]
    assert_still_contained(world)


def test_a_plain_filter_still_works(api: ApiServer, world: Any) -> None:
    status, doc = call(api, "/ace/table-diff", table_name="public.sec_plain",
                       table_filter="id BETWEEN 1 AND 10 AND label LIKE 'OWN-%'")
    assert status == 200 and doc["status"] == "COMPLETED", doc
    assert doc["result"]["mismatched_rows"] == 0
    assert_still_contained(world)


# --- row-level security --------------------------------------------------------------------


def test_a_table_under_row_level_security_is_refused_naming_the_policy(api: ApiServer,
                                                                       world: Any) -> None:
    status, doc = call(api, "/ace/table-diff", table_name="public.sec_rls")
    assert status == 200 and doc["status"] == "FAILED", doc
    assert "row-level security" in doc["error"] and "sec_rls_evil" in doc["error"]
    assert seen(world, "policy") == 0, "the policy function ran"
    assert_still_contained(world)


# --- repairs reaching the caller's functions -------------------------------------------------


def _diverge_and_repair(api: ApiServer, cluster: Any, table: str, update: str,
                        **repair_options: Any) -> dict[str, Any]:
    run_sql(caller_dsn(cluster, 1), update, f"DELETE FROM {table} WHERE id = 7")
    run_sql(caller_dsn(cluster, 1), "TRUNCATE sec_seen")
    status, diff = call(api, "/ace/table-diff", table_name=f"public.{table}")
    assert status == 200 and diff["status"] == "COMPLETED", diff
    assert diff["result"]["mismatched_rows"] == 3
    status, repair = call(api, "/ace/table-repair", table_name=f"public.{table}",
                          diff_file=diff["task_id"], source_of_truth="n1", **repair_options)
    assert status == 200, repair
    return repair


@pytest.mark.parametrize("fire_triggers", [False, True])
def test_an_enable_always_trigger_runs_with_the_callers_rights_only(
        api: ApiServer, world: Any, fire_triggers: bool) -> None:
    repair = _diverge_and_repair(api, world, "sec_trig",
                                 "UPDATE sec_trig SET label = 'drift' WHERE id IN (3, 4)",
                                 fire_triggers=fire_triggers)
    assert repair["status"] == "COMPLETED", repair.get("error")
    assert seen(world, "trigger") >= 3  # it did run, on n2, for each written row
    assert_still_contained(world)


def test_an_index_expression_runs_with_the_callers_rights_only(api: ApiServer,
                                                               world: Any) -> None:
    repair = _diverge_and_repair(api, world, "sec_idx",
                                 "UPDATE sec_idx SET val = -val WHERE id IN (3, 4)")
    assert repair["status"] == "COMPLETED", repair.get("error")
    assert seen(world, "index") >= 3
    assert_still_contained(world)


def test_a_domain_check_runs_with_the_callers_rights_only(api: ApiServer, world: Any) -> None:
    repair = _diverge_and_repair(api, world, "sec_dom",
                                 "UPDATE sec_dom SET val = -val WHERE id IN (3, 4)")
    assert repair["status"] == "COMPLETED", repair.get("error")
    assert seen(world, "domain") >= 3
    assert_still_contained(world)


def test_nothing_ace_wrote_holds_another_roles_data(sec_fleet: Fleet, world: Any) -> None:
    output_dir = Path(sec_fleet.env["ACE_OUTPUT_DIR"])
    for path in [*output_dir.rglob("*"), *sec_fleet.workdir.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert_still_contained(world)


def test_the_caller_cannot_act_as_aces_own_login(api: ApiServer, world: Any) -> None:
    session = api.session("ace")
    response = session.post(api.url("/ace/table-diff"), timeout=10,
                            json={"cluster_name": "testclus", "table_name": "public.sec_plain"})
    assert response.status_code == 403 and "ACE's own login" in response.json()["error"]


def test_sessions_log_in_as_the_caller(world: Any) -> None:
    """Checked from the server's side: no ACE session of the caller runs as another user."""
    conn = psycopg2.connect(caller_dsn(world, 0))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT session_user, current_setting('is_superuser')")
            assert cur.fetchone() == (CALLER, "off")
    finally:
        conn.close()
