"""An operator's repair and auto-repair run no code of the table's owner (docs/security.md).

ACE's login ``ace`` is no superuser, but it holds ``pg_read_all_data`` and
``pg_write_all_data``: code that runs in its session reads and writes every
role's tables. A table owner (MAL, no other rights) puts code on her table that
fires when a repair writes it: an ``ENABLE ALWAYS`` trigger, a CHECK constraint,
a domain check, an index expression, a generated column, a rule, a cast to her
type. Her code writes into BOB's table and copies BOB's secret into her own, in
whatever session runs it. The operator's repair of her table (the CLI, with no
caller role) and auto-repair must refuse, in one sentence, before changing
anything; her own repair as a caller, code that does not fire in ACE's repair
mode, and code a superuser owns must go on working.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from diff_helpers import (
    CLUSTER,
    NODES,
    as_admin_on_every_node,
    assert_one_error_line,
    execute,
    query,
    run_ace,
)
from repair_helpers import diff_table, repair
from spock_fixtures import drop_spock, install_spock, log_exception

from ace_shared.autorepair.run import poll_exceptions, repair_exceptions
from ace_shared.config import load_settings

MAL = "rt_mallory"  # owns one table; no other rights
BOB = "rt_bob"  # owns a table MAL may neither read nor write

# the body of every function of MAL's: write into BOB's table, copy BOB's secret into hers
_SPY = (f"INSERT INTO {BOB}.secret VALUES (666, 'written as ' || current_user) "
        "ON CONFLICT DO NOTHING; "
        f"INSERT INTO {MAL}.loot SELECT current_user, v FROM {BOB}.secret; ")


def _admin(cluster: Any, i: int, statements: list[str]) -> None:
    execute(cluster.admin_dsn(i, cluster.dbname), statements)


@pytest.fixture
def trapped(pg_cluster: Any) -> Iterator[Any]:
    """MAL's table carries an ENABLE ALWAYS trigger (her right as its owner) that, in whatever
    session fires it, writes into BOB's table and copies BOB's secret into her own table."""
    as_admin_on_every_node(pg_cluster, [
        f"DO $$ BEGIN CREATE ROLE {MAL} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"DO $$ BEGIN CREATE ROLE {BOB} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"DROP SCHEMA IF EXISTS {MAL} CASCADE", f"DROP SCHEMA IF EXISTS {BOB} CASCADE",
        f"CREATE SCHEMA {BOB} AUTHORIZATION {BOB}",
        f"CREATE TABLE {BOB}.secret (id int PRIMARY KEY, v text)",
        f"INSERT INTO {BOB}.secret VALUES (1, 'bob''s secret')",
        f"ALTER TABLE {BOB}.secret OWNER TO {BOB}",
        f"CREATE SCHEMA {MAL} AUTHORIZATION {MAL}",
        f"SET ROLE {MAL}",
        f"CREATE TABLE {MAL}.t (id int PRIMARY KEY, label text)",
        f"INSERT INTO {MAL}.t SELECT g, 'v' || g FROM generate_series(1, 100) g",
        f"CREATE TABLE {MAL}.loot (who text, v text)",
        f"CREATE FUNCTION {MAL}.spy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {_SPY}"
        "  RETURN NEW; "
        "EXCEPTION WHEN insufficient_privilege THEN RETURN NEW; END $$",
        f"CREATE TRIGGER spy AFTER INSERT OR UPDATE ON {MAL}.t "
        f"FOR EACH ROW EXECUTE FUNCTION {MAL}.spy()",
        f"ALTER TABLE {MAL}.t ENABLE ALWAYS TRIGGER spy",
        "RESET ROLE",
    ])
    # the drift an operator will repair, made with MAL's trigger off
    _admin(pg_cluster, 1, [f"ALTER TABLE {MAL}.t DISABLE TRIGGER spy",
                           f"UPDATE {MAL}.t SET label = 'drift' WHERE id IN (7, 50)",
                           f"DELETE FROM {MAL}.t WHERE id = 60",
                           f"ALTER TABLE {MAL}.t ENABLE ALWAYS TRIGGER spy"])
    yield pg_cluster
    as_admin_on_every_node(pg_cluster, [f"DROP SCHEMA IF EXISTS {MAL} CASCADE",
                                        f"DROP SCHEMA IF EXISTS {BOB} CASCADE"])


def _nothing_ran(cluster: Any) -> None:
    """BOB's table as it was and MAL's loot empty, on every node."""
    for i, node in enumerate(NODES):
        dsn = cluster.admin_dsn(i, cluster.dbname)
        assert query(dsn, f"SELECT id, v FROM {BOB}.secret ORDER BY id") == [
            (1, "bob's secret")], node
        assert query(dsn, f"SELECT who, v FROM {MAL}.loot") == [], node


def _label(cluster: Any, i: int, row_id: int) -> list[tuple[Any, ...]]:
    return query(cluster.admin_dsn(i, cluster.dbname),
                 f"SELECT label FROM {MAL}.t WHERE id = %s", (row_id,))


def _operators_repair_is_refused(cluster: Any, *words: str) -> None:
    """The operator diffs MAL's table and repairs n2 from n1: refused in one sentence naming
    the node, the table, ``words`` and what to do; n2 unchanged and MAL's code never ran."""
    diff = run_ace("table-diff", CLUSTER, f"{MAL}.t")
    assert diff.code == 1, diff.stdout + diff.stderr
    repair_run = run_ace("table-repair", CLUSTER, f"{MAL}.t", f"--diff-file={diff.diff_path}",
                         "--source-of-truth=n1")
    assert_one_error_line(repair_run, "node n2", f"{MAL}.t", *words, f"role {MAL}",
                          "as its owner", "administrator")
    assert repair_run.stderr.rstrip().endswith("review that code."), repair_run.stderr
    assert _label(cluster, 1, 7) == [("drift",)]  # nothing was changed
    assert _label(cluster, 1, 60) == []
    _nothing_ran(cluster)


def test_an_operators_repair_runs_no_trigger_of_the_tables_owner(trapped: Any) -> None:
    """A table owner's ENABLE ALWAYS trigger, fired by the operator's repair, would write and
    read every other role's table with ace's pg_write_all_data/pg_read_all_data."""
    _operators_repair_is_refused(trapped, "trigger spy", f"function {MAL}.spy")


@pytest.fixture
def checked(trapped: Any) -> Any:
    """The same table, its trigger dropped, with a CHECK constraint (NOT VALID, so only new
    rows are checked) calling MAL's function that does what the trigger did."""
    as_admin_on_every_node(trapped, [
        f"SET ROLE {MAL}",
        f"DROP TRIGGER spy ON {MAL}.t",
        f"CREATE FUNCTION {MAL}.spyf(id int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN {_SPY}"
        "  RETURN true; "
        "EXCEPTION WHEN insufficient_privilege THEN RETURN true; END $$",
        f"ALTER TABLE {MAL}.t ADD CONSTRAINT spy CHECK ({MAL}.spyf(id)) NOT VALID",
        "RESET ROLE"])
    return trapped


def test_an_operators_repair_runs_no_check_constraint_of_the_tables_owner(checked: Any) -> None:
    """Not only triggers: a CHECK constraint on her table runs her function as ace when the
    operator's repair writes a row."""
    _operators_repair_is_refused(checked, "check constraint spy", f"function {MAL}.spyf")


def test_auto_repair_runs_no_trigger_of_the_tables_owner(trapped: Any) -> None:
    """A table owner who causes a Spock conflict on her own table would get her ENABLE ALWAYS
    trigger run by auto-repair as ace; the conflict is left UNRESOLVED with the reason."""
    dsn = trapped.admin_dsn(0, trapped.dbname)
    install_spock(dsn)
    try:
        now = query(dsn, "SELECT now()")[0][0]
        log_exception(dsn, origin=49152, commit_ts=now + timedelta(hours=1), xid=991,
                      table=(MAL, "t"), new_row={"id": 1, "label": "remote"})
        settings = load_settings()
        poll_exceptions(CLUSTER, None, settings)
        result = repair_exceptions(CLUSTER, None, settings).to_dict()
        assert result["nodes"]["n1"]["updated"] == 0, result
        assert result["nodes"]["n1"]["unresolved"] == 1, result
        (details,) = query(dsn, "SELECT resolution_details->>'error' "
                                "FROM spock.exception_status_detail")[0]
        for word in ("node n1", f"{MAL}.t", "trigger spy", f"function {MAL}.spy",
                     f"role {MAL}", "as its owner"):
            assert word in details, (word, details)
        assert _label(trapped, 0, 1) == [("v1",)]
        _nothing_ran(trapped)
    finally:
        drop_spock(dsn)


def _as_mal(*statements: str) -> list[str]:
    return [f"SET ROLE {MAL}", *statements, "RESET ROLE"]


# her spying function, and f(v) calling it; f may be IMMUTABLE (indexes, generated columns),
# since an immutable function may still call a volatile one
_SPY_V = (f"CREATE FUNCTION {MAL}.spy_v() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN {_SPY}"
          "RETURN true; EXCEPTION WHEN insufficient_privilege OR read_only_sql_transaction "
          "THEN RETURN true; END $$")


def _func(arg: str, ret: str, value: str, volatility: str = "VOLATILE") -> list[str]:
    return [_SPY_V, f"CREATE FUNCTION {MAL}.f(v {arg}) RETURNS {ret} LANGUAGE plpgsql "
                    f"{volatility} AS $$ BEGIN PERFORM {MAL}.spy_v(); RETURN {value}; END $$"]


# Other places her code hides: (the words naming it, MAL's statements putting it there)
OTHER_CODE = {
    "ENABLE REPLICA trigger": (("trigger spy2", f"function {MAL}.spy"), _as_mal(
        f"CREATE TRIGGER spy2 AFTER INSERT OR UPDATE OR DELETE ON {MAL}.t "
        f"FOR EACH ROW EXECUTE FUNCTION {MAL}.spy()",
        f"ALTER TABLE {MAL}.t ENABLE REPLICA TRIGGER spy2")),
    "domain check": ((f"domain {MAL}.d", f"function {MAL}.f"), _as_mal(
        *_func("text", "boolean", "true"),
        f"CREATE DOMAIN {MAL}.d AS text CHECK ({MAL}.f(VALUE))",
        f"ALTER TABLE {MAL}.t ALTER COLUMN label TYPE {MAL}.d")),
    "domain over a domain": ((f"domain {MAL}.inner_d", f"function {MAL}.f"), _as_mal(
        *_func("text", "boolean", "true"),
        f"CREATE DOMAIN {MAL}.inner_d AS text CHECK ({MAL}.f(VALUE))",
        f"CREATE DOMAIN {MAL}.outer_d AS {MAL}.inner_d",
        f"ALTER TABLE {MAL}.t ALTER COLUMN label TYPE {MAL}.outer_d")),
    "index expression": (("index spy_idx", f"function {MAL}.f"), _as_mal(
        *_func("text", "text", "v", "IMMUTABLE"),
        f"CREATE INDEX spy_idx ON {MAL}.t ({MAL}.f(label))")),
    "partial index": (("index spy_idx", f"function {MAL}.f"), _as_mal(
        *_func("text", "boolean", "true", "IMMUTABLE"),
        f"CREATE INDEX spy_idx ON {MAL}.t (id) WHERE {MAL}.f(label)")),
    "generated column": (("generated column g", f"function {MAL}.f"), _as_mal(
        *_func("text", "text", "v", "IMMUTABLE"),
        f"ALTER TABLE {MAL}.t ADD COLUMN g text GENERATED ALWAYS AS ({MAL}.f(label)) STORED")),
    "cast to her type": ((f"cast from text to {MAL}.tag", f"function {MAL}.f"), _as_mal(
        f"CREATE TYPE {MAL}.tag AS (v text)",
        *_func("text", f"{MAL}.tag", "ROW(v)"),
        f"CREATE CAST (text AS {MAL}.tag) WITH FUNCTION {MAL}.f(text)",
        f"ALTER TABLE {MAL}.t ADD COLUMN tag {MAL}.tag")),
    "rule": (("rule spy_rule", f"function {MAL}.f"), _as_mal(
        *_func("text", "boolean", "true"),
        # (a repair's upsert is refused on a table with INSERT or UPDATE rules; a DELETE rule
        # fires, on the row n2 has and n1 lacks)
        f"CREATE RULE spy_rule AS ON DELETE TO {MAL}.t DO ALSO SELECT {MAL}.f(OLD.label)",
        f"ALTER TABLE {MAL}.t ENABLE ALWAYS RULE spy_rule")),
}


@pytest.mark.parametrize("kind", OTHER_CODE)
def test_an_operators_repair_runs_no_other_code_of_the_tables_owner(
        trapped: Any, kind: str) -> None:
    """ENABLE REPLICA triggers, domains (also over domains), index expressions and
    predicates, generated columns, rules and casts to her types all run her function when
    a repair writes her table."""
    words, statements = OTHER_CODE[kind]
    as_admin_on_every_node(trapped, [f"DROP TRIGGER spy ON {MAL}.t"])
    # a row n1 lacks, for the repair to delete (made before her code is there to run)
    _admin(trapped, 1, [f"INSERT INTO {MAL}.t (id, label) VALUES (1000, 'only on n2')"])
    as_admin_on_every_node(trapped, statements)
    _operators_repair_is_refused(trapped, *words)


def test_a_policy_of_the_tables_owner_never_runs(trapped: Any) -> None:
    """Row-level security applies to ace (no BYPASSRLS), so the repair is refused before a
    policy of hers could run (every ACE session has row_security = off)."""
    as_admin_on_every_node(trapped, _as_mal(
        f"DROP TRIGGER spy ON {MAL}.t", *_func("text", "boolean", "true"),
        f"CREATE POLICY spy ON {MAL}.t USING ({MAL}.f(label))"))
    diff = run_ace("table-diff", CLUSTER, f"{MAL}.t")
    assert diff.code == 1, diff.stdout + diff.stderr
    as_admin_on_every_node(trapped, _as_mal(f"ALTER TABLE {MAL}.t ENABLE ROW LEVEL SECURITY"))
    repair_run = run_ace("table-repair", CLUSTER, f"{MAL}.t", f"--diff-file={diff.diff_path}",
                         "--source-of-truth=n1")
    assert_one_error_line(repair_run, "node n2", "row-level security", "policy spy")
    assert _label(trapped, 1, 7) == [("drift",)]
    _nothing_ran(trapped)


def test_an_ordinary_trigger_of_the_owner_does_not_stop_a_repair(trapped: Any) -> None:
    """Her trigger without ENABLE ALWAYS does not fire in ACE's repair mode, so the
    operator's repair goes ahead; with --fire-triggers it would fire, and is refused."""
    as_admin_on_every_node(trapped, _as_mal(f"ALTER TABLE {MAL}.t ENABLE TRIGGER spy"))
    diff = run_ace("table-diff", CLUSTER, f"{MAL}.t")
    assert diff.code == 1, diff.stdout + diff.stderr
    fired = run_ace("table-repair", CLUSTER, f"{MAL}.t", f"--diff-file={diff.diff_path}",
                    "--source-of-truth=n1", "--fire-triggers")
    assert_one_error_line(fired, "node n2", "trigger spy", f"function {MAL}.spy")
    assert _label(trapped, 1, 7) == [("drift",)]
    quiet = run_ace("table-repair", CLUSTER, f"{MAL}.t", f"--diff-file={diff.diff_path}",
                    "--source-of-truth=n1")
    assert quiet.code == 0, quiet.stdout + quiet.stderr
    assert _label(trapped, 1, 7) == [("v7",)]
    assert _label(trapped, 1, 60) == [("v60",)]
    _nothing_ran(trapped)


def test_a_superusers_trigger_on_her_table_still_runs(trapped: Any) -> None:
    """Code a superuser owns is not hers to change: an ENABLE ALWAYS trigger on her table
    whose function the superuser wrote still fires during the operator's repair."""
    as_admin_on_every_node(trapped, [
        f"DROP TRIGGER spy ON {MAL}.t",
        f"CREATE TABLE {BOB}.audit (id int, who text)",
        f"CREATE FUNCTION {BOB}.audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"  INSERT INTO {BOB}.audit VALUES (NEW.id, current_user); RETURN NEW; END $$",
        f"CREATE TRIGGER audit AFTER INSERT OR UPDATE ON {MAL}.t "
        f"FOR EACH ROW EXECUTE FUNCTION {BOB}.audit()",
        f"ALTER TABLE {MAL}.t ENABLE ALWAYS TRIGGER audit"])
    diff = run_ace("table-diff", CLUSTER, f"{MAL}.t")
    repaired = run_ace("table-repair", CLUSTER, f"{MAL}.t", f"--diff-file={diff.diff_path}",
                       "--source-of-truth=n1")
    assert repaired.code == 0, repaired.stdout + repaired.stderr
    assert _label(trapped, 1, 7) == [("v7",)]
    audited = query(trapped.admin_dsn(1, trapped.dbname),
                    f"SELECT id, who FROM {BOB}.audit ORDER BY id")
    assert audited == [(7, "ace"), (50, "ace"), (60, "ace")]


def test_her_own_repair_as_a_caller_runs_her_trigger_with_her_rights(trapped: Any) -> None:
    """Through the API she repairs her table as herself: her trigger fires in her own session,
    where BOB's table is out of her reach, and the repair is done."""
    trapped.serve_role(MAL, repair=True)
    path, _ = diff_table(f"{MAL}.t", role=MAL)
    result = repair(f"{MAL}.t", path, source_of_truth="n1", role=MAL)
    assert result["nodes"]["n2"]["updated"] == 2, result
    assert result["nodes"]["n2"]["inserted"] == 1, result
    assert _label(trapped, 1, 7) == [("v7",)]
    _nothing_ran(trapped)
