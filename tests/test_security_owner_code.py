"""No ACE session evaluates code a table's owner controls (docs/security.md).

A table owner (a role without special rights) plants what an attacker would:
look-alikes of every function and operator ACE's SQL names (in ``public``, where
PUBLIC may create as on a cluster upgraded from PostgreSQL 14, and in a
caller's own schema), and a domain whose CHECK calls her function as the type
of a key. Her function writes who ran it into a table anyone may insert into,
and fails when it runs in a read-only session (a diff), so a run of it is
seen either way. ACE's diffs (an operator's, as the superuser the test
cluster logs in as, and a caller's), a repair, a rerun and auto-repair must
give their usual results and run none of it; only the owner's own writes of
domain values check them, in her own session (another caller's repair of
them is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from diff_helpers import (
    NODES,
    assert_one_error_line,
    diff_in_process,
    execute,
    query,
    reported_keys,
    table_diff,
)
from repair_helpers import repair, rerun
from spock_fixtures import drop_spock, install_spock, log_exception

from ace_shared.autorepair.run import poll_exceptions, repair_exceptions
from ace_shared.config import load_settings
from ace_shared.errors import RepairError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import node_targets
from ace_shared.nodes.sessions import NodeSessions

OWNER = "own_owner"
CALLER = "own_caller"
ROWS = 6000
CHANGED = (7, 3001, 5999)  # ids whose label differs on n2

_NOTE = """
CREATE FUNCTION public.own_note(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    INSERT INTO public.own_ran VALUES (session_user, current_user, what);
  EXCEPTION WHEN read_only_sql_transaction THEN
    RAISE EXCEPTION 'owner code (%) ran as %', what, current_user;
  END;
  RETURN true;
END $$
"""


_OPERATORS = (("eq", "="), ("ne", "<>"), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="))
# (name, arguments, result) of each look-alike function
_FUNCTIONS = (
    ("hash_record_extended", "record, integer", "bigint"),
    ("hashtextextended", "text, integer", "bigint"),
    ("to_json", "text", "json"),
    ("md5", "text", "text"),
    ("width_bucket", "integer, integer[]", "integer"),
    ("width_bucket", "public.own_key, public.own_key[]", "integer"),
    ("own_mod", "bigint, integer", "bigint"),
    *((f"own_key_{name}", "public.own_key, public.own_key", "boolean")
      for name, _ in _OPERATORS),
)


def _lookalikes(schema: str) -> list[str]:
    """Functions and operators that would win name resolution against ACE's SQL.

    Each is a better match than the built-in (an exact argument type where the
    built-in takes a wider or polymorphic one), so under a search path that
    reaches ``schema`` PostgreSQL would pick it.
    """
    s = schema
    made = [f"CREATE FUNCTION {s}.{name}({args}) RETURNS {result} LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM public.own_note('{name}({args})'); RETURN NULL; END $$"
            for name, args, result in _FUNCTIONS]
    made.append(f"CREATE OPERATOR {s}.% (LEFTARG = bigint, RIGHTARG = integer, "
                f"FUNCTION = {s}.own_mod)")
    made += [f"CREATE OPERATOR {s}.{op} (LEFTARG = public.own_key, RIGHTARG = public.own_key, "
             f"FUNCTION = {s}.own_key_{name})" for name, op in _OPERATORS]
    return made


def _drop_lookalikes(schema: str) -> list[str]:
    return [f"DROP FUNCTION IF EXISTS {schema}.{name}({args}) CASCADE"
            for name, args, _ in _FUNCTIONS]


def _admin(cluster: Any, i: int, statements: list[str]) -> None:
    execute(cluster.admin_dsn(i, cluster.dbname), statements)


def _tables() -> list[str]:
    rows = f"FROM generate_series(1, {ROWS}) g"
    grant = f"GRANT SELECT, INSERT, UPDATE, DELETE ON {{}} TO {CALLER}"
    return [
        # a key of a plain built-in type
        "CREATE TABLE public.own_plain (id int PRIMARY KEY, label text, n numeric)",
        f"INSERT INTO public.own_plain SELECT g, 'item ' || g, g * 1.5 {rows}",
        grant.format("public.own_plain"),
        # a key of the owner's domain (its CHECK calls her function), one column and two
        "CREATE TABLE public.own_dom (id public.own_key PRIMARY KEY, label public.own_label)",
        f"INSERT INTO public.own_dom SELECT g, 'item ' || g {rows}",
        grant.format("public.own_dom"),
        "CREATE TABLE public.own_dom2 (id public.own_key, sub int, label public.own_label, "
        "PRIMARY KEY (id, sub))",
        f"INSERT INTO public.own_dom2 SELECT g, g % 3, 'item ' || g {rows}",
        grant.format("public.own_dom2"),
    ]


@pytest.fixture(scope="module")
def planted(pg_cluster: Any) -> Iterator[Any]:
    """Every node: PUBLIC may create in ``public``; the owner's tables, domain and traps."""
    pg_cluster.serve_role(CALLER, repair=True)
    for i in range(len(NODES)):
        _admin(pg_cluster, i, [
            "GRANT CREATE ON SCHEMA public TO PUBLIC",  # as on a cluster upgraded from PG 14
            f"DO $$ BEGIN CREATE ROLE {OWNER} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            "DROP TABLE IF EXISTS public.own_ran",
            "CREATE TABLE public.own_ran (who text, as_user text, what text)",
            "GRANT INSERT, SELECT ON public.own_ran TO PUBLIC",
            f"DROP SCHEMA IF EXISTS {CALLER} CASCADE",
            f"CREATE SCHEMA {CALLER} AUTHORIZATION {CALLER}",
            # the caller's own default search path, which ACE's pinned one must override
            f"ALTER ROLE {CALLER} SET search_path = {CALLER}, public",
            f"SET ROLE {OWNER}",
            _NOTE,
            "CREATE DOMAIN public.own_key AS int CHECK (public.own_note('domain check on a key'))",
            "CREATE DOMAIN public.own_label AS text "
            "CHECK (public.own_note('domain check on a value'))",
            "GRANT EXECUTE ON FUNCTION public.own_note(text) TO PUBLIC",
            *_tables(),
            "RESET ROLE",
        ])
    execute(pg_cluster.node_dsn(1), [
        f"UPDATE public.{t} SET label = 'changed' WHERE id::int IN {CHANGED}"
        for t in ("own_plain", "own_dom", "own_dom2")])
    _admin_all(pg_cluster, ["TRUNCATE public.own_ran"])
    yield pg_cluster
    for i in range(len(NODES)):
        _admin(pg_cluster, i, [
            f"DROP SCHEMA IF EXISTS {CALLER} CASCADE",
            f"DROP OWNED BY {OWNER}",
            "DROP TABLE IF EXISTS public.own_ran",
            f"ALTER ROLE {CALLER} RESET search_path",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        ])


def _admin_all(cluster: Any, statements: list[str]) -> None:
    for i in range(len(NODES)):
        _admin(cluster, i, statements)


@pytest.fixture
def lookalikes(planted: Any) -> Iterator[Any]:
    """The owner's look-alikes in ``public``, and the caller's own in its schema."""
    _admin_all(planted, [f"SET ROLE {OWNER}", *_lookalikes("public"),
                         f"SET ROLE {CALLER}", *_lookalikes(CALLER), "RESET ROLE"])
    yield planted
    _admin_all(planted, [*_drop_lookalikes("public"), *_drop_lookalikes(CALLER)])


def _ran(cluster: Any) -> list[tuple[str, ...]]:
    """Every run of the owner's code recorded on any node: (node, session user, user, what)."""
    out = []
    for i, node in enumerate(NODES):
        out += [(node, *r) for r in query(cluster.admin_dsn(i, cluster.dbname),
                                          "SELECT who, as_user, what FROM public.own_ran")]
    return out


def _expected(table: str) -> dict[str, set[str]]:
    keys = {str(k) for k in CHANGED}
    return {"n1/n2": keys, "n2/n3": keys}


def _rerun(table: str, path: Any, column: str = "id") -> dict[str, set[str]]:
    """Rerun ``path`` both ways; the keys each reports (they must agree)."""
    found = []
    for behavior in ("multiprocessing", "hostdb"):
        again, _ = rerun(f"public.{table}", path, behavior)
        found.append(reported_keys(json.loads(again.read_text()), column))
    assert found[0] == found[1]
    return found[0]


@pytest.mark.parametrize("table", ["own_dom", "own_dom2"])
def test_an_operators_diff_runs_no_check_of_the_owners_key_domain(planted: Any,
                                                                 table: str) -> None:
    """The diff runs as the superuser the test cluster logs in as; the domain's CHECK
    would run as it if a bound were cast to the domain."""
    run = table_diff(f"public.{table}", "--block-rows", "1000")
    assert run.code == 1, run.stderr
    assert reported_keys(run.diff()) == _expected(table)
    assert _ran(planted) == []


@pytest.mark.parametrize("table", ["own_dom", "own_dom2"])
def test_a_callers_diff_runs_no_check_of_the_owners_key_domain(planted: Any,
                                                              table: str) -> None:
    """Another role's diff must not run the owner's code as that role either."""
    _, diff = diff_in_process(f"public.{table}", block_rows=1000, role=CALLER)
    assert reported_keys(diff) == _expected(table)
    assert _ran(planted) == []


@pytest.mark.parametrize("table", ["own_dom", "own_dom2"])
def test_a_rerun_runs_no_check_of_the_owners_key_domain(planted: Any, table: str) -> None:
    path, _ = diff_in_process(f"public.{table}", block_rows=1000)
    assert _rerun(table, path) == _expected(table)
    assert _ran(planted) == []


@pytest.fixture
def enum_casts(planted: Any) -> Iterator[Any]:
    """A table keyed by the owner's enum, and her casts from text to it and back."""
    _admin_all(planted, [
        f"SET ROLE {OWNER}",
        "CREATE TYPE public.own_mood AS ENUM ('sad', 'ok', 'happy')",
        "CREATE TABLE public.own_enum (k public.own_mood, i int, label text, "
        "mood public.own_mood, PRIMARY KEY (k, i))",
        "INSERT INTO public.own_enum SELECT (CASE g % 3 WHEN 0 THEN 'sad' WHEN 1 THEN 'ok' "
        f"ELSE 'happy' END)::public.own_mood, g, 'item ' || g, 'ok' FROM generate_series(1, {ROWS}) g",
        f"GRANT SELECT ON public.own_enum TO {CALLER}",
        "CREATE FUNCTION public.own_to_mood(text) RETURNS public.own_mood LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM public.own_note('cast text to own_mood'); RETURN 'ok'; END $$",
        "CREATE FUNCTION public.own_from_mood(public.own_mood) RETURNS text LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM public.own_note('cast own_mood to text'); RETURN 'ok'; END $$",
        "CREATE CAST (text AS public.own_mood) WITH FUNCTION public.own_to_mood(text)",
        "CREATE CAST (public.own_mood AS text) WITH FUNCTION public.own_from_mood(public.own_mood)",
        "RESET ROLE",
    ])
    execute(planted.node_dsn(1), [
        f"UPDATE public.own_enum SET label = 'changed' WHERE i IN {CHANGED}"])
    _admin_all(planted, ["TRUNCATE public.own_ran"])
    yield planted
    _admin_all(planted, ["DROP TABLE IF EXISTS public.own_enum",
                         "DROP TYPE IF EXISTS public.own_mood CASCADE",
                         "DROP FUNCTION IF EXISTS public.own_to_mood(text)"])


def test_an_enum_key_is_read_without_the_owners_casts(enum_casts: Any) -> None:
    """Enum keys are fine (PostgreSQL's own input, output and comparison), but a cast to
    or from the enum is its owner's code: keys travel through the enum's own input
    and output functions instead."""
    run = table_diff("public.own_enum", "--block-rows", "1000")
    assert run.code == 1, run.stderr
    assert reported_keys(run.diff(), "i") == _expected("own_enum")
    _, diff = diff_in_process("public.own_enum", block_rows=1000, role=CALLER)
    assert reported_keys(diff, "i") == _expected("own_enum")
    assert {(r["k"], r["i"]) for rows in diff["diffs"]["n1/n2"].values() for r in rows} == {
        (("sad", "ok", "happy")[i % 3], str(i)) for i in CHANGED}
    assert _rerun("own_enum", run.diff_path, "i") == _expected("own_enum")
    assert _ran(enum_casts) == []


def test_auto_repair_finds_the_row_without_the_owners_key_domain(planted: Any) -> None:
    """Auto-repair runs as the operator; finding the local row by the remote row's key
    must not check the owner's domain (only writing a domain value would)."""
    dsn = planted.node_dsn(0)
    install_spock(dsn)
    try:
        _admin(planted, 0, [
            f"SET ROLE {OWNER}",
            "CREATE TABLE public.own_ar (id public.own_key PRIMARY KEY, name text)",
            "INSERT INTO public.own_ar VALUES (1, 'local')",
            "RESET ROLE",
            "TRUNCATE public.own_ran",
        ])
        now = query(dsn, "SELECT now()")[0][0]
        log_exception(dsn, origin=49152, commit_ts=now + timedelta(hours=1), xid=990,
                      table=("public", "own_ar"), new_row={"id": 1, "name": "remote"})
        settings = load_settings()
        poll_exceptions("testclus", None, settings)
        result = repair_exceptions("testclus", None, settings).to_dict()
        assert result["nodes"]["n1"]["updated"] == 1, result
        assert query(dsn, "SELECT name FROM public.own_ar") == [("remote",)]
        assert _ran(planted) == []
    finally:
        drop_spock(dsn)
        _admin(planted, 0, ["DROP TABLE IF EXISTS public.own_ar"])


@pytest.mark.parametrize("table", ["own_plain", "own_dom", "own_dom2"])
def test_an_operators_diff_runs_no_look_alike(lookalikes: Any, table: str) -> None:
    run = table_diff(f"public.{table}", "--block-rows", "1000")
    assert run.code == 1, run.stderr
    assert reported_keys(run.diff()) == _expected(table)
    assert _ran(lookalikes) == []


@pytest.mark.parametrize("table", ["own_plain", "own_dom", "own_dom2"])
def test_a_callers_diff_runs_no_look_alike(lookalikes: Any, table: str) -> None:
    _, diff = diff_in_process(f"public.{table}", block_rows=1000, role=CALLER)
    assert reported_keys(diff) == _expected(table)
    assert _ran(lookalikes) == []


@pytest.mark.parametrize("table", ["own_plain", "own_dom", "own_dom2"])
def test_repair_and_rerun_run_no_look_alike(lookalikes: Any, table: str) -> None:
    planted = lookalikes
    path, _ = diff_in_process(f"public.{table}", block_rows=1000)
    assert _rerun(table, path) == _expected(table)
    assert _ran(planted) == []
    repairer = CALLER
    if table != "own_plain":
        # writing her domain's values would run her checks in the caller's session, so the
        # caller's repair is refused (test_security_repair_owner_code.py); she repairs it
        with pytest.raises(RepairError, match="domain public.own_key of column id"):
            repair(f"public.{table}", path, source_of_truth="n1", role=CALLER)
        assert _ran(planted) == []
        planted.serve_role(OWNER, repair=True)
        repairer = OWNER
    repair(f"public.{table}", path, source_of_truth="n1", role=repairer)
    # the only checks that ran are those of the repairer's own writes, in its own session
    assert {(node, who, as_user) for node, who, as_user, _ in _ran(planted)} <= {
        ("n2", repairer, repairer)}
    assert {what for *_, what in _ran(planted)} <= {"domain check on a key",
                                                   "domain check on a value"}
    _admin_all(planted, ["TRUNCATE public.own_ran"])
    assert _rerun(table, path) == {}
    assert _ran(planted) == []
    execute(planted.node_dsn(1), [
        f"UPDATE public.{table} SET label = 'changed' WHERE id::int IN {CHANGED}"])
    _admin_all(planted, ["TRUNCATE public.own_ran"])


def test_every_session_searches_only_pg_catalog_then_pg_temp(planted: Any) -> None:
    settings = load_settings()
    cluster = load_cluster(settings.cluster_dir, "testclus")
    for role in (None, CALLER):
        sessions = NodeSessions(node_targets(cluster, cluster.nodes, None, settings, role))
        try:
            paths = sessions.on_all(lambda cur: (cur.execute("SHOW search_path"),
                                                 cur.fetchone()[0])[1])
        finally:
            sessions.close()
        assert set(paths.values()) == {"pg_catalog, pg_temp"}, role


@pytest.mark.parametrize(("ddl", "type_name"), [
    ("CREATE TYPE public.own_pair AS (a int, b int)", "own_pair"),
    ("CREATE TYPE public.own_span AS RANGE (subtype = int4)", "own_span"),
    ("CREATE TYPE public.own_inner AS (a int); "
     "CREATE DOMAIN public.own_pair AS public.own_inner", "own_pair"),
])
def test_a_key_whose_type_is_not_built_in_is_refused(planted: Any, ddl: str,
                                                     type_name: str) -> None:
    """Its input and comparison could run code of the type's owner; enums are fine."""
    _admin_all(planted, [
        f"SET ROLE {OWNER}",
        "DROP TABLE IF EXISTS public.own_oddkey",
        f"DROP TYPE IF EXISTS public.{type_name} CASCADE",
        "DROP TYPE IF EXISTS public.own_inner CASCADE",
        ddl,
        f"CREATE TABLE public.own_oddkey (k public.{type_name} PRIMARY KEY, v text)",
        "RESET ROLE",
    ])
    try:
        run = table_diff("public.own_oddkey")
        assert_one_error_line(run, "key column k", type_name, "not built in")
    finally:
        _admin_all(planted, ["DROP TABLE IF EXISTS public.own_oddkey",
                             f"DROP TYPE IF EXISTS public.{type_name} CASCADE",
                             "DROP TYPE IF EXISTS public.own_inner CASCADE"])
    assert _ran(planted) == []
