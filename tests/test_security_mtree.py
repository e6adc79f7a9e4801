"""A table owner's code never runs with more rights than hers through ACE's Merkle trees.

The attacker is an ordinary role that owns a table an operator once tracked with
``ace mtree build``. Her key is her own domain, whose default and check call her
function. That function records who ran it and tries to make her a superuser:
every test below fails if it ever ran as anyone but her, or if she got the right.
The event trigger is set up as an administrator sets it up (``mtree init`` run
by a superuser). Her tree is built, updated and diffed by a superuser, as trees on
tables ACE's login does not own are: ACE's sessions are then a superuser's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, NODES, AceRun, execute, on_every_node, query, run_ace

OWNER = "sec_mt_owner"
PASSWORD = "sec_mt_pw"  # noqa: S105 - a scratch role on the test nodes
TABLE = "sec_mt.t"

# Her function: writes who runs it into her own table (which anyone may write), then
# tries something only a superuser may do, and records whether it worked.
SPY = f"""
CREATE FUNCTION sec_mt.spy() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE escalated boolean := false;
BEGIN
  BEGIN
    EXECUTE 'ALTER ROLE {OWNER} SUPERUSER';
    escalated := true;
  EXCEPTION WHEN OTHERS THEN
    escalated := false;
  END;
  INSERT INTO sec_mt.seen SELECT current_user, r.rolsuper, escalated
    FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
  RETURN true;
END $$"""


def _owner_dsn(cluster: Any, i: int) -> str:
    params = psycopg2.extensions.parse_dsn(cluster.node_dsn(i))
    return psycopg2.extensions.make_dsn(**{**params, "user": OWNER, "password": PASSWORD})


def admin_env() -> dict[str, str]:
    """``ACE_CLUSTER_DIR`` of a copy of the cluster file whose login is the ``postgres``
    superuser: the administrator's file (docs/security.md), whether or not ACE's own
    login is a superuser."""
    source = Path(os.environ["ACE_CLUSTER_DIR"]) / CLUSTER / f"{CLUSTER}.json"
    folder = source.parent.parent.parent / "sec-mt-admin"
    target = folder / CLUSTER / f"{CLUSTER}.json"
    if not target.exists():
        doc = json.loads(source.read_text())
        doc["pgedge"]["databases"][0].update(db_user="postgres", db_password="")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        target.write_text(json.dumps(doc))
        target.chmod(0o600)
    return {"ACE_CLUSTER_DIR": str(folder)}


def as_admin(*args: str) -> AceRun:
    """``ace mtree <args>`` as the superuser, who builds and checks trees on tables ACE's
    login does not own (docs/mtree.md): the attack's target."""
    return run_ace("mtree", *args, env=admin_env())


def init_as_superuser(cluster: Any) -> None:
    """``ace mtree init`` as ACE's login, then as a superuser (which adds the event
    trigger): what an administrator runs once."""
    assert run_ace("mtree", "init", CLUSTER).code == 0
    watched = as_admin("init", CLUSTER, "--json")
    assert watched.code == 0, watched.stderr
    assert set(json.loads(watched.stdout)["alter_table_watched"].values()) == {True}


def seen_elsewhere(cluster: Any) -> list[tuple[Any, ...]]:
    """Every run of her function, on any node, by anyone but her (or as a superuser)."""
    rows: list[tuple[Any, ...]] = []
    for i in range(len(NODES)):
        rows += query(cluster.admin_dsn(i, cluster.dbname),
                      "SELECT who, su, escalated FROM sec_mt.seen WHERE who <> %s OR su "
                      "OR escalated", (OWNER,))
        rows += query(cluster.admin_dsn(i, cluster.dbname),
                      "SELECT rolname, rolsuper, rolsuper FROM pg_roles WHERE rolname = %s "
                      "AND rolsuper", (OWNER,))
    return rows


@pytest.fixture()
def her_table(pg_cluster: Any) -> Iterator[str]:
    """Her schema, domain key, table and spy function on every node; a tree built on it by
    a superuser."""
    for i in range(len(NODES)):
        execute(pg_cluster.admin_dsn(i, pg_cluster.dbname), [
            "DROP SCHEMA IF EXISTS sec_mt CASCADE",
            f"DO $$ BEGIN CREATE ROLE {OWNER} LOGIN PASSWORD '{PASSWORD}'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            f"ALTER ROLE {OWNER} NOSUPERUSER",
            f"GRANT CREATE ON DATABASE {pg_cluster.dbname} TO {OWNER}",
        ])
        execute(_owner_dsn(pg_cluster, i), [
            "CREATE SCHEMA sec_mt",
            "GRANT USAGE ON SCHEMA sec_mt TO PUBLIC",
            "CREATE TABLE sec_mt.seen (who text, su boolean, escalated boolean)",
            "GRANT INSERT ON sec_mt.seen TO PUBLIC",
            SPY,
            "CREATE DOMAIN sec_mt.k AS int",
            "CREATE TABLE sec_mt.t (id sec_mt.k PRIMARY KEY, v text)",
            "INSERT INTO sec_mt.t SELECT g, 'v' FROM generate_series(1, 300) g",
        ])
    init_as_superuser(pg_cluster)
    built = as_admin("build", CLUSTER, TABLE)
    assert built.code == 0, built.stderr
    yield TABLE
    as_admin("teardown", CLUSTER, TABLE)
    for i in range(len(NODES)):
        execute(pg_cluster.admin_dsn(i, pg_cluster.dbname), ["DROP SCHEMA IF EXISTS sec_mt CASCADE",
                                                             f"ALTER ROLE {OWNER} NOSUPERUSER"])


def _arm(cluster: Any, i: int) -> None:
    """Her domain's default and check now call her function."""
    execute(_owner_dsn(cluster, i), [
        "ALTER DOMAIN sec_mt.k SET DEFAULT (CASE WHEN sec_mt.spy() THEN NULL END)::int",
        "ALTER DOMAIN sec_mt.k ADD CONSTRAINT spy CHECK (sec_mt.spy() OR VALUE IS NULL) "
        "NOT VALID",
        "DELETE FROM sec_mt.seen",
    ])


def test_her_alter_table_does_not_run_her_domain_code_as_a_superuser(pg_cluster: Any,
                                                                    her_table: str) -> None:
    _arm(pg_cluster, 0)
    execute(_owner_dsn(pg_cluster, 0), ["ALTER TABLE sec_mt.t SET (fillfactor = 90)"])
    assert seen_elsewhere(pg_cluster) == []
    # and the change is still noticed: the tree is refused until it is built again
    refused = as_admin("table-diff", CLUSTER, her_table)
    assert refused.code == 2, refused.stdout
    assert "altered" in refused.stderr and "n1" in refused.stderr, refused.stderr


def test_aces_own_sessions_run_none_of_her_domain_code(pg_cluster: Any, her_table: str) -> None:
    """Building, folding her writes and diffing her table: her domain's code may run in her
    own sessions only (her writes), never in ACE's."""
    for i in range(len(NODES)):
        _arm(pg_cluster, i)
    assert as_admin("build", CLUSTER, her_table).code == 0
    execute(_owner_dsn(pg_cluster, 1), ["UPDATE sec_mt.t SET v = 'changed' WHERE id IN (5, 250)",
                                        "INSERT INTO sec_mt.t VALUES (1000, 'new')",
                                        "DELETE FROM sec_mt.t WHERE id = 100"])
    diff = as_admin("table-diff", CLUSTER, her_table)
    assert diff.code == 1, diff.stderr
    assert sorted(int(r["id"]) for r in diff.diff()["diffs"]["n1/n2"]["n2"]) == [5, 250, 1000]
    assert as_admin("update", CLUSTER, her_table).code == 0
    assert seen_elsewhere(pg_cluster) == []


def test_writes_by_another_role_are_logged_without_rights_in_aces_schema(
        pg_cluster: Any, her_table: str) -> None:
    """An ordinary role that may write her table writes it; its changes reach the tree."""
    for i in range(len(NODES)):
        execute(pg_cluster.admin_dsn(i, pg_cluster.dbname), [
            "DO $$ BEGIN CREATE ROLE sec_mt_writer LOGIN PASSWORD 'w'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"])
    execute(_owner_dsn(pg_cluster, 2), ["GRANT SELECT, INSERT, UPDATE, DELETE ON sec_mt.t "
                                        "TO sec_mt_writer"])
    params = psycopg2.extensions.parse_dsn(pg_cluster.node_dsn(2))
    execute(psycopg2.extensions.make_dsn(**{**params, "user": "sec_mt_writer", "password": "w"}),
            ["UPDATE sec_mt.t SET v = 'w' WHERE id = 7", "INSERT INTO sec_mt.t VALUES (999, 'w')"])
    diff = as_admin("table-diff", CLUSTER, her_table)
    assert diff.code == 1, diff.stderr
    assert sorted(int(r["id"]) for r in diff.diff()["diffs"]["n1/n3"]["n3"]) == [7, 999]


def test_aces_objects_hold_no_type_and_run_no_function_an_owner_controls(
        pg_cluster: Any, her_table: str) -> None:
    """Every column of ACE's tables is of a built-in type; the event trigger's function runs
    as ace_mtree_writer with its search path pinned; every tracking function runs as the
    owner of the table it tracks, whoever writes it."""
    for i in range(len(NODES)):
        dsn = pg_cluster.admin_dsn(i, pg_cluster.dbname)
        foreign = query(dsn, "SELECT c.relname, a.attname, a.atttypid::regtype::text "
                        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                        "WHERE c.relnamespace = 'ace_mtree'::regnamespace AND a.attnum > 0 "
                        "AND a.atttypid >= 16384")
        assert foreign == []
        watch = query(dsn, "SELECT r.rolname, p.prosecdef, p.proconfig FROM pg_event_trigger e "
                      "JOIN pg_proc p ON p.oid = e.evtfoid JOIN pg_roles r ON r.oid = p.proowner "
                      "WHERE e.evtname = 'ace_mtree_alter_table'")
        assert watch == [("ace_mtree_writer", True, ["search_path=pg_catalog, pg_temp"])]
        trackers = query(dsn, "SELECT c.relname, pg_get_userbyid(p.proowner), "
                         "pg_get_userbyid(c.relowner), p.prosecdef FROM pg_trigger t "
                         "JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid "
                         "WHERE t.tgname LIKE 'ace\\_mtree\\_%%'")
        assert [r for r in trackers if r[1] != r[2] or not r[3]] == []
        assert {r[1] for r in trackers if r[0] == "t"} == {OWNER}
        writer = query(dsn, "SELECT rolcanlogin, rolinherit, rolsuper, rolcreaterole, "
                       "rolbypassrls FROM pg_roles WHERE rolname = 'ace_mtree_writer'")
        assert writer == [(False, False, False, False, False)]


def test_a_key_of_a_type_that_is_not_built_in_is_refused_in_one_sentence(
        pg_cluster: Any) -> None:
    init_as_superuser(pg_cluster)
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS sec_mt_enum", "DROP TYPE IF EXISTS sec_mt_mood",
        "CREATE TYPE sec_mt_mood AS ENUM ('sad', 'ok', 'happy')",
        "CREATE TABLE sec_mt_enum (m sec_mt_mood PRIMARY KEY, v text)",
        "INSERT INTO sec_mt_enum VALUES ('sad', 'a'), ('ok', 'b')",
    ])
    try:
        refused = run_ace("mtree", "build", CLUSTER, "public.sec_mt_enum")
        assert refused.code == 2, refused.stdout
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("ace: error: Key column m of table public.sec_mt_enum is of "
                               "type "), line
        assert line.endswith("sec_mt_mood on node n1, which is not built into PostgreSQL (nor "
                             "a domain over a built-in type), so its functions could run its "
                             "owner's code in ACE's sessions; mtree cannot track it (use "
                             "table-diff)."), line
        left = query(pg_cluster.node_dsn(0), "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                     "'public.sec_mt_enum'::regclass")
        assert left == [(0,)]
    finally:
        on_every_node(pg_cluster, ["DROP TABLE sec_mt_enum", "DROP TYPE sec_mt_mood"])


def test_a_tree_of_the_older_layout_is_refused_until_built_again(pg_cluster: Any,
                                                                 her_table: str) -> None:
    """Trees whose logs held the key's own (domain) type are not trusted or folded: an older
    catalogue asks for init, an older tree for a build, and both then work."""
    admin = [pg_cluster.admin_dsn(i, pg_cluster.dbname) for i in range(len(NODES))]
    for dsn in admin:  # as an earlier version left them: no layout, a superuser's watch
        execute(dsn, ["ALTER TABLE ace_mtree.trees DROP COLUMN format_version",
                      "CREATE FUNCTION ace_mtree.on_alter_table() RETURNS event_trigger "
                      "LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN END $$",
                      "DROP EVENT TRIGGER ace_mtree_alter_table",
                      "CREATE EVENT TRIGGER ace_mtree_alter_table ON ddl_command_end "
                      "WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION ace_mtree.on_alter_table()"])
    refused = as_admin("table-diff", CLUSTER, her_table)
    assert refused.code == 2
    assert "older version" in refused.stderr and "mtree init" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # ACE's own login's init leaves no watch that runs as a superuser (it replaces it as one,
    # or drops it as the schema's owner)
    assert run_ace("mtree", "init", CLUSTER).code == 0
    for dsn in admin:
        assert query(dsn, "SELECT pg_get_userbyid(p.proowner) FROM pg_event_trigger e "
                     "JOIN pg_proc p ON p.oid = e.evtfoid "
                     "WHERE e.evtname LIKE 'ace\\_mtree%%'") in ([], [("ace_mtree_writer",)])
    init_as_superuser(pg_cluster)  # upgrades the catalogue: its trees are of the older layout
    refused = as_admin("table-diff", CLUSTER, her_table)
    assert refused.code == 2
    assert "older version" in refused.stderr and "ace mtree build" in refused.stderr
    assert as_admin("build", CLUSTER, her_table).code == 0
    assert as_admin("table-diff", CLUSTER, her_table).code == 0


# Look-alikes, in public, of operators ACE's mtree queries use with operands of mixed types,
# which an unqualified call would prefer to pg_catalog's (the exact type beats a cast).
LOOK_ALIKES = [
    "CREATE FUNCTION public.sec_mt_and(bigint, integer) RETURNS bigint LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'look-alike & ran'; END $$",
    "CREATE OPERATOR public.& (LEFTARG = bigint, RIGHTARG = integer, "
    "FUNCTION = public.sec_mt_and)",
    "CREATE FUNCTION public.sec_mt_cat(bigint, text) RETURNS text LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'look-alike || ran'; END $$",
    "CREATE OPERATOR public.|| (LEFTARG = bigint, RIGHTARG = text, FUNCTION = public.sec_mt_cat)",
]


def test_look_alikes_in_public_are_never_called(pg_cluster: Any) -> None:
    init_as_superuser(pg_cluster)
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS sec_mt_path",
        "CREATE TABLE sec_mt_path (id bigint PRIMARY KEY, v text)",
        "INSERT INTO sec_mt_path SELECT g, 'v' FROM generate_series(1, 3000) g",
    ])
    admin = [pg_cluster.admin_dsn(i, pg_cluster.dbname) for i in range(len(NODES))]
    try:
        for dsn in admin:
            execute(dsn, LOOK_ALIKES)
        built = run_ace("mtree", "build", CLUSTER, "public.sec_mt_path")
        assert built.code == 0, built.stderr
        execute(pg_cluster.node_dsn(1), ["UPDATE sec_mt_path SET v = 'x' WHERE id IN (150, 2500)",
                                         "INSERT INTO sec_mt_path SELECT g, 'n' FROM "
                                         "generate_series(5001, 5500) g"])
        diff = run_ace("mtree", "table-diff", CLUSTER, "public.sec_mt_path")
        assert diff.code == 1, diff.stderr
        assert len(diff.diff()["diffs"]["n1/n2"]["n2"]) == 502
    finally:
        for dsn in admin:
            execute(dsn, ["DROP OPERATOR IF EXISTS public.& (bigint, integer)",
                          "DROP OPERATOR IF EXISTS public.|| (bigint, text)",
                          "DROP FUNCTION IF EXISTS public.sec_mt_and(bigint, integer)",
                          "DROP FUNCTION IF EXISTS public.sec_mt_cat(bigint, text)",
                          "DROP TABLE IF EXISTS public.sec_mt_path"])
