"""A table owner's code never runs with more rights than hers through ACE's Merkle trees.

The attacker is an ordinary role that owns a table an operator once tracked with
``ace mtree build``. Her key is her own domain, whose default and check call her
function. That function records who ran it and tries to make her a superuser:
every test below fails if it ever ran as anyone but her, or if she got the right.
The event trigger is set up as an administrator sets it up (``mtree init`` run
by a superuser); ACE's own login builds, updates and diffs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from diff_helpers import CLUSTER, NODES, execute, on_every_node, query, run_ace

from ace_shared.mtree import objects

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


def init_as_superuser(cluster: Any) -> None:
    """``ace mtree init`` as ACE's login, then as a superuser (which adds the event
    trigger): what an administrator runs once."""
    assert run_ace("mtree", "init", CLUSTER).code == 0
    for i in range(len(NODES)):
        conn = psycopg2.connect(cluster.admin_dsn(i, cluster.dbname))
        try:
            with conn, conn.cursor() as cur:
                assert objects.init(cur) is True
        finally:
            conn.close()


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
    ACE's login (a member of her role, so it may build there even without superuser)."""
    for i in range(len(NODES)):
        execute(pg_cluster.admin_dsn(i, pg_cluster.dbname), [
            "DROP SCHEMA IF EXISTS sec_mt CASCADE",
            f"DO $$ BEGIN CREATE ROLE {OWNER} LOGIN PASSWORD '{PASSWORD}'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            f"ALTER ROLE {OWNER} NOSUPERUSER",
            f"GRANT CREATE ON DATABASE {pg_cluster.dbname} TO {OWNER}",
            f"GRANT {OWNER} TO {pg_cluster.user}",
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
    built = run_ace("mtree", "build", CLUSTER, TABLE)
    assert built.code == 0, built.stderr
    yield TABLE
    run_ace("mtree", "teardown", CLUSTER, TABLE)
    on_every_node(pg_cluster, ["DROP SCHEMA IF EXISTS sec_mt CASCADE"])
    for i in range(len(NODES)):
        execute(pg_cluster.admin_dsn(i, pg_cluster.dbname), [f"ALTER ROLE {OWNER} NOSUPERUSER"])


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
    refused = run_ace("mtree", "table-diff", CLUSTER, her_table)
    assert refused.code == 2, refused.stdout
    assert "altered" in refused.stderr and "n1" in refused.stderr, refused.stderr


def test_aces_own_sessions_run_none_of_her_domain_code(pg_cluster: Any, her_table: str) -> None:
    """Building, folding her writes and diffing her table: her domain's code may run in her
    own sessions only (her writes), never in ACE's."""
    for i in range(len(NODES)):
        _arm(pg_cluster, i)
    assert run_ace("mtree", "build", CLUSTER, her_table).code == 0
    execute(_owner_dsn(pg_cluster, 1), ["UPDATE sec_mt.t SET v = 'changed' WHERE id IN (5, 250)",
                                        "INSERT INTO sec_mt.t VALUES (1000, 'new')",
                                        "DELETE FROM sec_mt.t WHERE id = 100"])
    diff = run_ace("mtree", "table-diff", CLUSTER, her_table)
    assert diff.code == 1, diff.stderr
    assert sorted(int(r["id"]) for r in diff.diff()["diffs"]["n1/n2"]["n2"]) == [5, 250, 1000]
    assert run_ace("mtree", "update", CLUSTER, her_table).code == 0
    assert seen_elsewhere(pg_cluster) == []
