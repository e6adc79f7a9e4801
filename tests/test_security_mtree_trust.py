"""ACE's mtree objects run no code of a role other than ACE's login, a tree's builder or a
squatter on the schema name, in ACE's sessions, another caller's or a superuser's.

Each test reproduces an attack a review found around the earlier mtree fixes: a role that
made ``ace_mtree`` before ACE did, a tree builder's own "log" named in the catalogue, and a
tree builder's triggers on the tree tables she owns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from diff_helpers import (
    CLUSTER,
    NODES,
    as_admin_on_every_node,
    execute,
    mtree_init,
    on_every_node,
    query,
    run_ace,
)

from ace_shared.config import load_settings
from ace_shared.errors import TableError
from ace_shared.mtree.objects import KINDS, tree_key
from ace_shared.nodes.ident import parse_table_name

BUILDER = "rt_builder"  # owns a table, has the grants docs/security.md gives a tree builder
VICTIM = "public.rt_victim"  # the operator's tree


@pytest.fixture
def victim_tree(pg_cluster: Any) -> Iterator[tuple[Any, str]]:
    """A tree the operator built; the event trigger installed as documented."""
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {VICTIM}",
                               f"CREATE TABLE {VICTIM} (id int PRIMARY KEY, v text)",
                               f"INSERT INTO {VICTIM} SELECT g, 'v' || g "
                               "FROM generate_series(1, 200) g"])
    assert mtree_init().code == 0
    built = run_ace("mtree", "build", CLUSTER, VICTIM)
    assert built.code == 0, built.stdout + built.stderr
    as_admin_on_every_node(pg_cluster, [
        f"DO $$ BEGIN CREATE ROLE {BUILDER} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"DROP SCHEMA IF EXISTS {BUILDER} CASCADE",
        f"CREATE SCHEMA {BUILDER} AUTHORIZATION {BUILDER}",
        f"GRANT USAGE, CREATE ON SCHEMA ace_mtree TO {BUILDER}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ace_mtree.trees TO {BUILDER}"])
    yield pg_cluster, tree_key(parse_table_name(VICTIM))
    as_admin_on_every_node(pg_cluster, [
        "DELETE FROM ace_mtree.trees WHERE tree_key = 'rtfake'",
        "DROP TABLE IF EXISTS ace_mtree.log_rtfake",
        f"DROP SCHEMA IF EXISTS {BUILDER} CASCADE",
        f"REVOKE ALL ON SCHEMA ace_mtree FROM {BUILDER}",
        f"REVOKE ALL ON ace_mtree.trees FROM {BUILDER}"])
    run_ace("mtree", "teardown", CLUSTER, VICTIM)
    on_every_node(pg_cluster, [f"DROP TABLE IF EXISTS {VICTIM}"])


def test_the_event_trigger_runs_no_code_of_a_tree_builder(victim_tree: tuple[Any, str]) -> None:
    """A caller with the documented build grants gets her trigger run by the event trigger as
    ace_mtree_writer, and writes forged rows into every other tree's log."""
    cluster, key = victim_tree
    dsn = cluster.admin_dsn(0, cluster.dbname)
    execute(dsn, [
        f"SET ROLE {BUILDER}",
        f"CREATE TABLE {BUILDER}.t (id int PRIMARY KEY)",
        # a "log" of her own in ACE's schema, with her trigger, and a catalogue row naming it
        "CREATE TABLE ace_mtree.log_rtfake (sign smallint)",
        "GRANT INSERT ON ace_mtree.log_rtfake TO ace_mtree_writer",
        f"CREATE FUNCTION {BUILDER}.forge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"  INSERT INTO ace_mtree.\"log_{key}\" VALUES (424242, 1, 777); RETURN NEW; END $$",
        "CREATE TRIGGER forge BEFORE INSERT ON ace_mtree.log_rtfake "
        f"FOR EACH ROW EXECUTE FUNCTION {BUILDER}.forge()",
        # every column the catalogue has (ACE's earlier one filled some by defaults)
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = "
        "'ace_mtree.trees'::regclass AND attname = 'altered_seq') THEN "
        "INSERT INTO ace_mtree.trees (tree_key, schema_name, table_name, table_oid, shape_sig, "
        "block_rows, bounds_sig, built_at, updated_at, format_version, altered_seq) VALUES "
        f"('rtfake', '{BUILDER}', 't', '{BUILDER}.t'::regclass, 'x', 1, 'x', now(), now(), 2, 0); "
        "ELSE INSERT INTO ace_mtree.trees (tree_key, schema_name, table_name, table_oid, "
        f"shape_sig, block_rows, bounds_sig, format_version) VALUES ('rtfake', '{BUILDER}', 't', "
        f"'{BUILDER}.t'::regclass, 'x', 1, 'x', 2); END IF; END $$",
    ])
    execute(dsn, [f"SET ROLE {BUILDER}", f"ALTER TABLE {BUILDER}.t ADD COLUMN x int"])
    assert query(dsn, f'SELECT count(*) FROM ace_mtree."log_{key}" WHERE h = 777') == [(0,)]


OWNER_T = "rt_treeowner"  # owns a table and, having built its tree through the API, the tree's tables
WATCH = f"{OWNER_T}.ran"


def _mtree_as(action: str, role: str | None, table: str) -> dict[str, Any]:
    """One mtree action as a worker runs it: for a REST caller (``role``) or the operator."""
    from ace_shared.mtree.request import validate_mtree_request
    from ace_shared.mtree.run import run_mtree
    from ace_shared.tasks.ids import new_task_id
    settings = load_settings()
    raw = {"action": action, "cluster_name": CLUSTER, "table_name": table}
    if role:
        raw["role"] = role
    return run_mtree(validate_mtree_request(raw, settings), settings, new_task_id("mtree"))


@pytest.fixture
def owned_tree(pg_cluster: Any) -> Iterator[tuple[Any, str]]:
    """OWNER_T built the tree of her table through the API (the documented grants), then put
    statement triggers on the tree's tables, which she owns, that note who writes them."""
    table = f"{OWNER_T}.t"
    assert mtree_init().code == 0
    pg_cluster.serve_role(OWNER_T)
    as_admin_on_every_node(pg_cluster, [
        f"DROP SCHEMA IF EXISTS {OWNER_T} CASCADE",
        f"CREATE SCHEMA {OWNER_T} AUTHORIZATION {OWNER_T}",
        f"GRANT USAGE, CREATE ON SCHEMA ace_mtree TO {OWNER_T}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ace_mtree.trees TO {OWNER_T}",
        f"SET ROLE {OWNER_T}",
        f"CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 300) g",
        f"CREATE TABLE {WATCH} (who text, tbl text, op text)",
        f"GRANT USAGE ON SCHEMA {OWNER_T} TO PUBLIC",
        f"GRANT INSERT ON {WATCH} TO PUBLIC",
        f"CREATE FUNCTION {OWNER_T}.note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"  INSERT INTO {WATCH} VALUES (current_user, TG_TABLE_NAME, TG_OP); RETURN NULL; END $$",
        "RESET ROLE"])
    assert _mtree_as("build", OWNER_T, table)["action"] == "build"
    key = tree_key(parse_table_name(table))
    statements = [f"SET ROLE {OWNER_T}"]
    for kind in KINDS:
        statements.append(
            f'CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON '
            f'ace_mtree."{kind}_{key}" FOR EACH STATEMENT EXECUTE FUNCTION {OWNER_T}.note()')
    as_admin_on_every_node(pg_cluster, [*statements, "RESET ROLE"])
    execute(pg_cluster.admin_dsn(1, pg_cluster.dbname),
            [f"UPDATE {table} SET v = 'drift' WHERE id IN (5, 250)"])
    yield pg_cluster, table
    run_ace("mtree", "teardown", CLUSTER, table)
    as_admin_on_every_node(pg_cluster, [
        f"DROP SCHEMA IF EXISTS {OWNER_T} CASCADE",
        "DROP TABLE IF EXISTS " + ", ".join(f'ace_mtree."{kind}_{key}"' for kind in KINDS),
        f"DELETE FROM ace_mtree.trees WHERE tree_key = '{key}'",
        f"REVOKE ALL ON SCHEMA ace_mtree FROM {OWNER_T}",
        f"REVOKE ALL ON ace_mtree.trees FROM {OWNER_T}"])


def test_an_operators_mtree_diff_runs_no_trigger_of_the_trees_owner(
        owned_tree: tuple[Any, str]) -> None:
    """A table owner who built her tree through the API owns its tables; her triggers on
    them run as ace (pg_write_all_data) when the operator updates or diffs her tree."""
    cluster, table = owned_tree
    key = tree_key(parse_table_name(table))
    diff = run_ace("mtree", "table-diff", CLUSTER, table)
    ran = set()
    for i in range(len(NODES)):
        ran |= set(query(cluster.admin_dsn(i, cluster.dbname), f"SELECT who FROM {WATCH}"))
    assert ran <= {(OWNER_T,)}, ran
    # refused in one sentence that names the tree, the table and what was found on it
    assert diff.code == 2, diff.stdout + diff.stderr
    assert diff.stderr == (
        f"ace: error: ACE will not use the Merkle tree of table {table} on node n1: its table "
        f"ace_mtree.blocks_{key} (owned by {OWNER_T}) has triggers, which could run its "
        "owner's code in this session; drop what was added, or have the tree's owner run "
        "'ace mtree build' for it again (which makes its tables afresh), and run this "
        "again.\n")
    # without her triggers, her tree is the operator's to diff, as before
    statements = [f"SET ROLE {OWNER_T}"]
    for kind in KINDS:
        statements.append(f'DROP TRIGGER note ON ace_mtree."{kind}_{key}"')
    as_admin_on_every_node(cluster, [*statements, "RESET ROLE"])
    diff = run_ace("mtree", "table-diff", CLUSTER, table)
    assert diff.code == 1, diff.stdout + diff.stderr
    assert sorted(int(r["id"]) for r in diff.diff()["diffs"]["n1/n2"]["n2"]) == [5, 250]


def test_another_callers_mtree_update_runs_no_trigger_of_the_trees_owner(
        owned_tree: tuple[Any, str]) -> None:
    """A reader of her table, given the documented per-tree grants, runs the tree owner's
    triggers in its own session when it updates the tree: she acts with its rights."""
    cluster, table = owned_tree
    reader = "rt_tree_reader"
    key = tree_key(parse_table_name(table))
    cluster.serve_role(reader)
    as_admin_on_every_node(cluster, [
        f"GRANT SELECT ON {table} TO {reader}",
        f"GRANT USAGE ON SCHEMA ace_mtree TO {reader}",
        f"GRANT SELECT, UPDATE ON ace_mtree.trees TO {reader}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON "  # the four tables docs/security.md names
        + ", ".join(f'ace_mtree."{kind}_{key}"' for kind in KINDS) + f" TO {reader}"])
    try:
        refusal = ""
        try:
            _mtree_as("update", reader, table)
        except TableError as exc:
            refusal = str(exc)
        ran = set()
        for i in range(len(NODES)):
            ran |= set(query(cluster.admin_dsn(i, cluster.dbname), f"SELECT who FROM {WATCH}"))
        assert ran <= {(OWNER_T,)}, ran
        assert refusal.startswith(f"ACE will not use the Merkle tree of table {table} on node "
                                  f"n1: its table ace_mtree.blocks_{key} (owned by {OWNER_T}) "
                                  "has triggers"), refusal
    finally:
        as_admin_on_every_node(cluster, [f"REVOKE ALL ON SCHEMA ace_mtree FROM {reader}",
                                         f"REVOKE ALL ON ace_mtree.trees FROM {reader}"])


def test_a_view_in_place_of_a_trees_table_is_refused_unread(owned_tree: tuple[Any, str]) -> None:
    """Functions in a view run as whoever reads it: the tree's owner swaps her inner table for
    a view calling her function, and the operator's diff must refuse it without reading it."""
    cluster, table = owned_tree
    key = tree_key(parse_table_name(table))
    statements = [f"SET ROLE {OWNER_T}"]
    for kind in KINDS:
        statements.append(f'DROP TRIGGER note ON ace_mtree."{kind}_{key}"')
    statements += [
        f"CREATE FUNCTION {OWNER_T}.peek() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
        f"  INSERT INTO {WATCH} VALUES (current_user, 'view', 'SELECT'); RETURN true; END $$",
        f'ALTER TABLE ace_mtree."inner_{key}" RENAME TO "inner_{key}_real"',
        f'CREATE VIEW ace_mtree."inner_{key}" AS SELECT * FROM ace_mtree."inner_{key}_real" '
        f"WHERE {OWNER_T}.peek()",
        "RESET ROLE"]
    as_admin_on_every_node(cluster, statements)
    diff = run_ace("mtree", "table-diff", CLUSTER, table)
    ran = set()
    for i in range(len(NODES)):
        ran |= set(query(cluster.admin_dsn(i, cluster.dbname), f"SELECT who FROM {WATCH}"))
    assert ran <= {(OWNER_T,)}, ran
    assert diff.code == 2, diff.stdout + diff.stderr
    assert (f"its table ace_mtree.inner_{key} (owned by {OWNER_T}) is not an ordinary table"
            in diff.stderr), diff.stderr
    as_admin_on_every_node(cluster, [f'DROP VIEW ace_mtree."inner_{key}"',
                                     f'DROP TABLE ace_mtree."inner_{key}_real"'])


SQUATTER = "rt_squatter"  # owns a table and has CREATE on the database, as an application's owner


@pytest.fixture
def squatted(pg_cluster: Any) -> Iterator[Any]:
    """Before the operator's first ``mtree init`` in the database, SQUATTER creates the schema
    ace_mtree herself, with a view named ``trees`` whose rows come from her function."""
    as_admin_on_every_node(pg_cluster, [
        "DROP SCHEMA IF EXISTS ace_mtree CASCADE",
        f"DO $$ BEGIN CREATE ROLE {SQUATTER} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"DROP SCHEMA IF EXISTS {SQUATTER} CASCADE",
        f"GRANT CREATE ON DATABASE {pg_cluster.dbname} TO {SQUATTER}",
        f"SET ROLE {SQUATTER}",
        f"CREATE SCHEMA {SQUATTER}",
        f"CREATE TABLE {SQUATTER}.loot (who text, super boolean)",
        f"GRANT USAGE ON SCHEMA {SQUATTER} TO PUBLIC",
        f"GRANT INSERT ON {SQUATTER}.loot TO PUBLIC",
        f"CREATE FUNCTION {SQUATTER}.pwn() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
        f"  INSERT INTO {SQUATTER}.loot SELECT current_user, rolsuper FROM pg_catalog.pg_roles "
        "    WHERE rolname = current_user; RETURN true; "
        "EXCEPTION WHEN others THEN RETURN true; END $$",
        f"GRANT EXECUTE ON FUNCTION {SQUATTER}.pwn() TO PUBLIC",
        "CREATE SCHEMA ace_mtree",
        "CREATE VIEW ace_mtree.trees AS SELECT 'k'::text AS tree_key, 's'::text AS schema_name, "
        "'t'::text AS table_name, 0::oid AS table_oid, ''::text AS shape_sig, 1 AS block_rows, "
        "''::text AS bounds_sig, now() AS built_at, now() AS updated_at, 2 AS format_version "
        f"WHERE {SQUATTER}.pwn()",
        "RESET ROLE"])
    yield pg_cluster
    as_admin_on_every_node(pg_cluster, [
        "DROP SCHEMA IF EXISTS ace_mtree CASCADE",
        f"DROP SCHEMA IF EXISTS {SQUATTER} CASCADE",
        f"REVOKE CREATE ON DATABASE {pg_cluster.dbname} FROM {SQUATTER}"])


def test_mtree_init_refuses_a_schema_ace_mtree_someone_else_made(squatted: Any) -> None:
    """A role with CREATE on the database who makes ace_mtree before ACE does has the admin
    `mtree init` (the documented superuser step) run her function as the superuser."""
    # ACE's own init fails here ("Permission denied ... grant it and run again"); the admin
    # cluster file's init, the documented superuser step, succeeds and reads her view
    as_login = run_ace("mtree", "init", CLUSTER)
    as_admin = run_ace("mtree", "init", CLUSTER,
                       env={"ACE_CLUSTER_DIR": os.environ["ACE_TEST_ADMIN_CLUSTER_DIR"]})
    ran = set()
    for i in range(len(NODES)):
        ran |= set(query(squatted.admin_dsn(i, squatted.dbname),
                         f"SELECT who, super FROM {SQUATTER}.loot"))
    assert ran == set(), ran
    # ACE's login refuses her schema in one sentence; the administrator's step touches
    # nothing in it (the watch lives in a superuser's schema), and every command refuses it
    assert as_login.code == 2, as_login.stdout + as_login.stderr
    assert as_login.stderr == (
        f"ace: error: The schema ace_mtree on node n1 belongs to {SQUATTER}, not to ace, the "
        "login running 'ace mtree init', so ACE will not use it (its owner could run code in "
        "ACE's sessions); drop the schema (DROP SCHEMA ace_mtree CASCADE) and run 'ace mtree "
        f"init {CLUSTER}' again.\n")
    assert as_admin.code == 0, as_admin.stdout + as_admin.stderr
    refused = run_ace("mtree", "update", CLUSTER, "public.anything")
    assert refused.code == 2 and "run 'ace mtree init" in refused.stderr, refused.stderr
    as_admin_on_every_node(squatted, [  # her view, with every column ACE's catalogue has
        f"SET ROLE {SQUATTER}",
        "CREATE OR REPLACE VIEW ace_mtree.trees AS SELECT 'k'::text AS tree_key, "
        "'s'::text AS schema_name, 't'::text AS table_name, 0::oid AS table_oid, "
        "''::text AS shape_sig, 1 AS block_rows, ''::text AS bounds_sig, now() AS built_at, "
        "now() AS updated_at, 2 AS format_version, 0::bigint AS altered_seq "
        f"WHERE {SQUATTER}.pwn()", "RESET ROLE"])
    refused = run_ace("mtree", "table-diff", CLUSTER, "public.anything")
    assert refused.code == 2
    assert "ace_mtree.trees (owned by rt_squatter) is not an ordinary table" in refused.stderr
    assert ran == set() and query(squatted.admin_dsn(0, squatted.dbname),
                                  f"SELECT who FROM {SQUATTER}.loot") == []


@pytest.fixture
def squatted_admin(squatted: Any) -> Iterator[Any]:
    """ACE's own ace_mtree and a tree; SQUATTER then makes ace_mtree_admin before the
    administrator's step, with a view ``altered`` whose rows come from her function."""
    as_admin_on_every_node(squatted, [
        "DROP SCHEMA IF EXISTS ace_mtree CASCADE", "DROP EVENT TRIGGER IF EXISTS "
        "ace_mtree_alter_table", "DROP SCHEMA IF EXISTS ace_mtree_admin CASCADE"])
    on_every_node(squatted, [f"DROP TABLE IF EXISTS {VICTIM}",
                             f"CREATE TABLE {VICTIM} (id int PRIMARY KEY, v text)",
                             f"INSERT INTO {VICTIM} SELECT g, 'v' FROM generate_series(1, 50) g"])
    assert run_ace("mtree", "init", CLUSTER).code == 0
    assert run_ace("mtree", "build", CLUSTER, VICTIM).code == 0
    as_admin_on_every_node(squatted, [
        f"SET ROLE {SQUATTER}",
        "CREATE SCHEMA ace_mtree_admin",
        "GRANT USAGE ON SCHEMA ace_mtree_admin TO PUBLIC",
        "CREATE VIEW ace_mtree_admin.altered AS SELECT 0::oid AS table_oid, 1::bigint AS seq "
        f"WHERE {SQUATTER}.pwn()",
        "GRANT SELECT ON ace_mtree_admin.altered TO PUBLIC",
        "RESET ROLE"])
    yield squatted
    run_ace("mtree", "teardown", CLUSTER, VICTIM)
    as_admin_on_every_node(squatted, ["DROP SCHEMA IF EXISTS ace_mtree_admin CASCADE",
                                      f"DROP TABLE IF EXISTS {VICTIM}"])


def test_the_administrators_init_refuses_an_ace_mtree_admin_someone_else_made(
        squatted_admin: Any) -> None:
    """The watch's schema is a superuser's or nobody's: the administrator's init refuses hers
    in one sentence, and ACE's sessions never read her ``altered``."""
    as_admin = run_ace("mtree", "init", CLUSTER,
                       env={"ACE_CLUSTER_DIR": os.environ["ACE_TEST_ADMIN_CLUSTER_DIR"]})
    assert as_admin.code == 2, as_admin.stdout + as_admin.stderr
    assert as_admin.stderr == (
        f"ace: error: The schema ace_mtree_admin on node n1 belongs to {SQUATTER}, who is not "
        "a superuser, so the event trigger would run that role's code in every session; drop "
        "it (DROP SCHEMA ace_mtree_admin CASCADE) and run this again.\n")
    diff = run_ace("mtree", "table-diff", CLUSTER, VICTIM)
    assert diff.code == 0, diff.stdout + diff.stderr
    for i in range(len(NODES)):
        assert query(squatted_admin.admin_dsn(i, squatted_admin.dbname),
                     f"SELECT who FROM {SQUATTER}.loot") == []
