"""Merkle trees: ``ace mtree table-diff`` must report exactly what a full ``ace table-diff`` does.

Random workloads on different nodes (inserts, updates, deletes, key updates,
keys on block boundaries and beyond the first and last block, bulk changes
that split and merge leaves, writes made as replication and repairs make
them) are followed each time by both diffs, whose rows must be the same.
A tree that may be stale is refused in one sentence, never trusted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import pytest
from diff_helpers import (
    CLUSTER,
    NODES,
    AceRun,
    as_admin_on_every_node,
    execute,
    mtree_init,
    on_every_node,
    query,
    run_ace,
)

from ace_shared.config import load_settings
from ace_shared.diff.ranges import KeyRange
from ace_shared.errors import NodeUnreachableError
from ace_shared.mtree.leaves import levels_for
from ace_shared.mtree.objects import tree_key
from ace_shared.mtree.request import validate_mtree_request
from ace_shared.mtree.tree import LOCK_SPACE, lock_key, open_job, tree_lock
from ace_shared.nodes.ident import TableName

TABLE = "public.mt_work"
ROWS = 12000  # ids 10, 20, ...: gaps to insert into; 120 leaves at the default 100 rows


def mtree(*args: str) -> AceRun:
    return run_ace("mtree", *args)


def both_diffs(table: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Diff ``table`` through the trees and in full; return both files' contents."""
    tree_run = mtree("table-diff", CLUSTER, table)
    assert tree_run.code in (0, 1), (tree_run.stdout, tree_run.stderr)
    full_run = run_ace("table-diff", CLUSTER, table)
    assert full_run.code == tree_run.code, (tree_run.stdout, full_run.stdout)
    return tree_run.diff(), full_run.diff()


def assert_same_diff(table: str) -> dict[str, Any]:
    tree, full = both_diffs(table)
    assert tree["diffs"] == full["diffs"]
    assert tree["summary"]["diff_rows"] == full["summary"]["diff_rows"]
    assert tree["summary"]["total_rows_checked"] == full["summary"]["total_rows_checked"]
    return tree


def lowers(cluster: Any, table: str) -> list[int]:
    schema, name = table.split(".")
    blocks = f'ace_mtree."blocks_{tree_key(TableName(schema, name))}"'
    return [int(r[0]) for r in query(cluster.node_dsn(0),
                                     f"SELECT l0 FROM {blocks} WHERE block_no > 0 ORDER BY 1")]


@pytest.fixture(autouse=True)
def mtree_schema(pg_cluster: Any) -> None:
    """ACE's schema on every node (idempotent): each test may run alone, in any order."""
    assert mtree_init().code == 0


@pytest.fixture(scope="module")
def work_table(pg_cluster: Any) -> str:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_work",
        "CREATE TABLE mt_work (id bigint PRIMARY KEY, v text, f float8, ts timestamptz)",
        f"INSERT INTO mt_work SELECT g * 10, 'v' || g, g / 7.0, "
        f"'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute' "
        f"FROM generate_series(1, {ROWS}) g",
        "ANALYZE mt_work",
    ])
    assert mtree_init().code == 0  # module fixtures come before the autouse one
    built = mtree("build", CLUSTER, TABLE)
    assert built.code == 0, built.stderr
    return TABLE


def _random_round(rng: random.Random, cluster: Any, bounds: list[int]) -> None:
    """One burst of writes on one or two random nodes."""
    for node in rng.sample(range(len(NODES)), rng.choice((1, 2))):
        statements: list[str] = []
        for _ in range(rng.randint(3, 8)):
            k = rng.choice([rng.randint(1, ROWS) * 10, rng.choice(bounds),
                            rng.randint(1, ROWS) * 10 + rng.randint(1, 9)])
            kind = rng.choice(("insert", "update", "delete", "move", "edge"))
            if kind == "insert":
                statements.append(f"INSERT INTO mt_work VALUES ({k}, 'new', 1.5, now()) "
                                  "ON CONFLICT (id) DO UPDATE SET v = 'upserted'")
            elif kind == "update":
                statements.append(f"UPDATE mt_work SET v = v || 'x', f = f * 3 WHERE id = {k}")
            elif kind == "delete":
                statements.append(f"DELETE FROM mt_work WHERE id = {k}")
            elif kind == "move":  # a key update, possibly into another leaf
                target = rng.randint(1, ROWS * 10 + 100)
                statements.append(f"UPDATE mt_work SET id = {target} WHERE id = {k} AND NOT "
                                  f"EXISTS (SELECT 1 FROM mt_work WHERE id = {target})")
            else:  # before the first leaf's keys and after the last's
                edge = rng.choice((-rng.randint(1, 10**6), ROWS * 10 + rng.randint(1, 10**6)))
                statements.append(f"INSERT INTO mt_work VALUES ({edge}, 'edge', 0, now()) "
                                  "ON CONFLICT DO NOTHING")
        if rng.random() < 0.3:  # as a replication apply worker or a repair writes
            statements.insert(0, "SET LOCAL session_replication_role = replica")
        execute(cluster.node_dsn(node), statements)


def test_tree_and_full_diff_agree_through_random_workloads(pg_cluster: Any,
                                                           work_table: str) -> None:
    first = assert_same_diff(work_table)
    assert first["summary"]["mismatch"] is False
    rng = random.Random(20261201)
    for _ in range(8):
        _random_round(rng, pg_cluster, lowers(pg_cluster, work_table))
        diff = assert_same_diff(work_table)
        assert diff["summary"]["mtree"]["leaves_differing"] >= (1 if diff["diffs"] else 0)


def test_bulk_changes_split_and_merge_leaves_on_every_node_alike(pg_cluster: Any,
                                                                 work_table: str) -> None:
    # 3000 new keys inside one leaf on n2 only: that leaf must be split on every node
    execute(pg_cluster.node_dsn(1), [
        "INSERT INTO mt_work SELECT 50000 + g, 'bulk', 0, now() "
        "FROM generate_series(1, 3000) g ON CONFLICT DO NOTHING"])
    diff = assert_same_diff(work_table)
    assert diff["summary"]["mtree"]["leaves_split"] >= 1
    # and most rows of one leaf deleted everywhere: it is merged with its neighbour
    on_every_node(pg_cluster, ["DELETE FROM mt_work WHERE id > 70000 AND id < 100000"])
    diff = assert_same_diff(work_table)
    assert diff["summary"]["mtree"]["leaves_merged"] >= 1
    digests = {query(pg_cluster.node_dsn(i), "SELECT bounds_sig FROM ace_mtree.trees "
                     "WHERE table_name = 'mt_work'")[0][0] for i in range(len(NODES))}
    assert len(digests) == 1


def test_leaves_before_a_split_keep_their_place_in_the_tree(pg_cluster: Any) -> None:
    """Splitting renumbers and rehashes only the leaves from the first split one on (keys
    that only grow split the last leaf); differences before it, in it and after it are
    all still found, as are changes folded in together with the split."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_grow",
        "CREATE TABLE mt_grow (id bigint PRIMARY KEY, v text)",
        "INSERT INTO mt_grow SELECT g * 10, 'v' FROM generate_series(1, 3000) g",
    ])
    assert mtree("build", CLUSTER, "public.mt_grow").code == 0
    on_every_node(pg_cluster, [
        "INSERT INTO mt_grow SELECT g * 10, 'new' FROM generate_series(3001, 4000) g"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mt_grow SET v = 'n3' WHERE id IN (50, 15000)"])
    diff = assert_same_diff("public.mt_grow")
    assert diff["summary"]["mtree"]["leaves_split"] >= 1
    assert diff["summary"]["diff_rows"] == 2
    # now a split in the middle, and changes on either side of it on another node
    on_every_node(pg_cluster, ["INSERT INTO mt_grow SELECT 20000 + g, 'mid' "
                               "FROM generate_series(1, 400) g WHERE g % 10 <> 0"])
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_grow SET v = 'n2' WHERE id IN (20, 39990)"])
    diff = assert_same_diff("public.mt_grow")
    assert diff["summary"]["mtree"]["leaves_split"] >= 1
    assert diff["summary"]["diff_rows"] == 4


def test_splitting_an_early_leaf_moves_no_other_leaf(pg_cluster: Any) -> None:
    """A split takes free numbers after its leaf, moving a few neighbours at most: every
    other leaf keeps its number, and the boundary signature kept from the leaves removed and added equals
    one computed from every leaf, on every node."""
    from types import SimpleNamespace

    from ace_shared.mtree.leaves import bounds_signature
    table = tracked_table(pg_cluster, "mt_early", "g * 10", 5000)
    blocks = _blocks(table)
    before = query(pg_cluster.node_dsn(0), f"SELECT block_no, l0 FROM {blocks} ORDER BY 1")
    on_every_node(pg_cluster, ["INSERT INTO mt_early SELECT 300 + g, 'new' "
                               "FROM generate_series(1, 400) g WHERE g % 10 <> 0"])
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_early SET v = 'n2' WHERE id IN (10, 305, 49990)"])
    diff = assert_same_diff(table)
    assert diff["summary"]["mtree"]["leaves_split"] == 1 and diff["summary"]["diff_rows"] == 3
    after = query(pg_cluster.node_dsn(0), f"SELECT block_no, l0 FROM {blocks} ORDER BY 1")
    was, now = {low: no for no, low in before}, {low: no for no, low in after}
    moved = [low for low, no in was.items() if now.get(low) != no]
    # a few neighbours move to make room (as many as the pieces, at most): no others
    assert len(now) == len(was) + 4 and len(moved) <= 5, moved
    assert all(was[low] < 40 for low in moved), moved
    one_key = SimpleNamespace(key=("id",))
    for i in range(len(NODES)):
        with psycopg2.connect(pg_cluster.node_dsn(i)) as conn, conn.cursor() as cur:
            cur.execute("SELECT bounds_sig FROM ace_mtree.trees WHERE table_name = 'mt_early'")
            kept = cur.fetchone()[0]
            assert kept == bounds_signature(cur, one_key, tree_key(  # type: ignore[arg-type]
                TableName("public", "mt_early")))
        conn.close()


def test_a_tree_numbered_without_room_splits_and_keeps_agreeing(pg_cluster: Any) -> None:
    """A tree an earlier version built (leaves numbered 0, 1, 2, ... and a digest of every
    boundary in order) splits an early leaf by moving the leaves after it once, and its
    digest becomes one kept incrementally: both diffs still agree."""
    from types import SimpleNamespace

    from ace_shared.mtree.leaves import bounds_signature, rebuild_inner
    table = tracked_table(pg_cluster, "mt_dense_nos", "g * 10", 4000)
    blocks = _blocks(table)
    key = tree_key(TableName("public", "mt_dense_nos"))
    one_key = SimpleNamespace(key=("id",))
    for i in range(len(NODES)):  # as the earlier version left it
        with psycopg2.connect(pg_cluster.node_dsn(i)) as conn, conn.cursor() as cur:
            cur.execute(f"UPDATE {blocks} SET block_no = block_no / 4")
            rebuild_inner(cur, key, None)
            cur.execute(f"UPDATE ace_mtree.trees SET bounds_sig = (SELECT md5(string_agg("
                        f"ROW(l0)::text, ',' ORDER BY block_no)) FROM {blocks}) "
                        "WHERE table_name = 'mt_dense_nos'")
        conn.close()
    assert query(pg_cluster.node_dsn(0), f"SELECT max(block_no) + 1 = count(*) FROM {blocks}"
                 ) == [(True,)]
    on_every_node(pg_cluster, ["INSERT INTO mt_dense_nos SELECT 1000 + g, 'new' "
                               "FROM generate_series(1, 300) g WHERE g % 10 <> 0"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mt_dense_nos SET v = 'n3' WHERE id IN (1001, 39990)"])
    diff = assert_same_diff(table)
    assert diff["summary"]["mtree"]["leaves_split"] == 1 and diff["summary"]["diff_rows"] == 2
    for i in range(len(NODES)):
        with psycopg2.connect(pg_cluster.node_dsn(i)) as conn, conn.cursor() as cur:
            cur.execute("SELECT bounds_sig FROM ace_mtree.trees WHERE table_name = "
                        "'mt_dense_nos'")
            assert cur.fetchone()[0] == bounds_signature(cur, one_key, key)  # type: ignore[arg-type]
        conn.close()
    execute(pg_cluster.node_dsn(1), ["DELETE FROM mt_dense_nos WHERE id BETWEEN 20000 AND 20990"])
    diff = assert_same_diff(table)
    assert diff["summary"]["diff_rows"] == 102  # and the two of n3


def test_writes_in_other_session_settings_hash_as_ace_prints_them(pg_cluster: Any) -> None:
    """The trigger hashes under ACE's pinned settings, whatever the writer's session says."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_types",
        "CREATE TABLE mt_types (id int PRIMARY KEY, f float8, iv interval, b bytea, "
        "ts timestamptz, n numeric, j jsonb, a text[], \"Mixed Col\" text)",
        "INSERT INTO mt_types (id) SELECT g FROM generate_series(1, 40) g",
    ])
    assert mtree("build", CLUSTER, "public.mt_types").code == 0
    odd = ["SET extra_float_digits = 0", "SET DateStyle = 'SQL, DMY'",
           "SET IntervalStyle = 'sql_standard'", "SET bytea_output = 'escape'",
           "SET TimeZone = 'Asia/Tokyo'"]
    update = ("UPDATE mt_types SET f = 0.1::float8 + 0.2::float8, iv = '1 day 2 hours', "
              "b = '\\x00ff'::bytea, ts = '2024-01-01 12:00:00+00', n = 1.50, "
              "j = '{\"b\": 1, \"a\": 2}', a = ARRAY['x', NULL], \"Mixed Col\" = '' "
              "WHERE id <= 20")
    for i in range(len(NODES)):
        execute(pg_cluster.node_dsn(i), [*(odd if i == 1 else []), update])
    execute(pg_cluster.node_dsn(2), ["UPDATE mt_types SET f = 0.3, \"Mixed Col\" = NULL "
                                     "WHERE id = 7"])
    diff = assert_same_diff("public.mt_types")
    assert set(diff["diffs"]) == {"n1/n3", "n2/n3"}


def test_a_stale_tree_is_refused_in_one_sentence(pg_cluster: Any) -> None:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_stale",
        "CREATE TABLE mt_stale (id int PRIMARY KEY, v text)",
        "INSERT INTO mt_stale SELECT g, 'v' FROM generate_series(1, 500) g",
    ])
    assert mtree("build", CLUSTER, "public.mt_stale").code == 0
    cases = [
        ("ALTER TABLE mt_stale DISABLE TRIGGER ALL", "disabled"),
        # switched off and on again: the table looks as built, but writes may have been missed
        ("ALTER TABLE mt_stale DISABLE TRIGGER ace_mtree_ins; INSERT INTO mt_stale VALUES "
         "(100000, 'unseen'); ALTER TABLE mt_stale ENABLE ALWAYS TRIGGER ace_mtree_ins", "altered"),
        ("ALTER TABLE mt_stale ADD COLUMN extra int", "columns"),
    ]
    for statement, word in cases:
        if word == "columns":  # the same new column everywhere: the nodes agree, the tree not
            on_every_node(pg_cluster, [statement])
        else:
            execute(pg_cluster.node_dsn(2), [statement])
        refused = mtree("table-diff", CLUSTER, "public.mt_stale")
        assert refused.code == 2, refused.stdout
        assert word in refused.stderr, refused.stderr
        assert ("n3" if word != "columns" else "n1") in refused.stderr, refused.stderr
        assert "ace mtree build" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        if statement.startswith("ALTER TABLE mt_stale DISABLE"):
            execute(pg_cluster.node_dsn(2), ["ALTER TABLE mt_stale ENABLE TRIGGER ALL"])
            # re-enabling by hand turns the replica trigger into an ordinary one: still refused
            assert mtree("table-diff", CLUSTER, "public.mt_stale").code == 2
        on_every_node(pg_cluster, ["TRUNCATE mt_stale",
                                   "INSERT INTO mt_stale (id, v) SELECT g, 'v' "
                                   "FROM generate_series(1, 500) g"])
        assert mtree("build", CLUSTER, "public.mt_stale").code == 0
        assert mtree("table-diff", CLUSTER, "public.mt_stale").code == 0


def _blocks(table: str) -> str:
    schema, name = table.split(".")
    return f'ace_mtree."blocks_{tree_key(TableName(schema, name))}"'


def test_a_truncate_on_one_node_is_healed_by_the_next_update(pg_cluster: Any) -> None:
    """A TRUNCATE on one node (and rows written after it) no longer needs a rebuild: the
    next update hashes that node's leaves again from the table, says so in one sentence,
    and the tree's diff is a full diff's."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_trunc",
        "CREATE TABLE mt_trunc (id int PRIMARY KEY, v text)",
        "INSERT INTO mt_trunc SELECT g, 'v' FROM generate_series(1, 3000) g",
    ])
    assert mtree("build", CLUSTER, "public.mt_trunc").code == 0
    execute(pg_cluster.node_dsn(2), [
        "TRUNCATE mt_trunc",
        "INSERT INTO mt_trunc SELECT g, CASE WHEN g % 100 = 0 THEN 'n3' ELSE 'v' END "
        "FROM generate_series(1, 2500) g"])
    execute(pg_cluster.node_dsn(2), ["INSERT INTO mt_trunc VALUES (5000, 'after')"])
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_trunc SET v = 'n2' WHERE id = 7"])
    updated = mtree("update", CLUSTER, "public.mt_trunc", "--json")
    assert updated.code == 0, updated.stderr
    healed = json.loads(updated.stdout)["healed"]
    assert len(healed) == 1 and "truncated on node n3" in healed[0], healed
    assert "hashed again from the table" in healed[0]
    assert healed[0] in updated.stderr  # said once, as a note
    diff = assert_same_diff("public.mt_trunc")
    assert diff["summary"]["diff_rows"] == 527  # 500 gone, 25 changed, 1 new on n3; 1 on n2
    # emptied on another node, and straight into a re-check: healed there too
    execute(pg_cluster.node_dsn(1), ["TRUNCATE mt_trunc"])
    diff = assert_same_diff("public.mt_trunc")
    assert "truncated on node n2" in diff["summary"]["mtree"]["healed"][0]
    # and a later change on the healed nodes is folded as usual
    on_every_node(pg_cluster, ["TRUNCATE mt_trunc", "INSERT INTO mt_trunc VALUES (1, 'v')"])
    assert mtree("update", CLUSTER, "public.mt_trunc").code == 0
    execute(pg_cluster.node_dsn(0), ["INSERT INTO mt_trunc VALUES (2, 'n1')"])
    diff = assert_same_diff("public.mt_trunc")
    assert diff["summary"]["diff_rows"] == 1 and "healed" not in diff["summary"]["mtree"]


def test_a_stale_leaf_is_hashed_again_from_the_table(pg_cluster: Any) -> None:
    """A leaf its log cannot bring up to date (fewer rows than its logged deletes) is
    hashed again from the table on the next update, not trusted and not refused."""
    table = tracked_table(pg_cluster, "mt_staleleaf", "g", 2000)
    blocks = _blocks(table)
    leaf = query(pg_cluster.node_dsn(1), f"SELECT block_no FROM {blocks} WHERE block_no > 0 "
                 "ORDER BY block_no LIMIT 1 OFFSET 5")[0][0]
    low = query(pg_cluster.node_dsn(1), f"SELECT l0 FROM {blocks} WHERE block_no = {leaf}")[0][0]
    # the leaf on n2 no longer describes its rows (as if changes had been lost)
    execute(pg_cluster.node_dsn(1), [f"UPDATE {blocks} SET row_count = 0, hash = 42 "
                                     f"WHERE block_no = {leaf}"])
    on_every_node(pg_cluster, [f"DELETE FROM mt_staleleaf WHERE id = {low}"])
    updated = mtree("update", CLUSTER, table, "--json")
    assert updated.code == 0, updated.stderr
    healed = json.loads(updated.stdout)["healed"]
    assert len(healed) == 1 and "1 leaves" in healed[0] and "node n2" in healed[0], healed
    assert "stale" in healed[0]
    diff = assert_same_diff(table)
    assert diff["summary"]["mtree"]["leaves_differing"] == 0


def tracked_table(cluster: Any, name: str, key: str, rows: int) -> str:
    """``public.<name> (id int PRIMARY KEY, v text)``, the same on every node, its tree built."""
    on_every_node(cluster, [
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id int PRIMARY KEY, v text)",
        f"INSERT INTO {name} SELECT {key}, 'v' FROM generate_series(1, {rows}) g",
    ])
    assert mtree("build", CLUSTER, f"public.{name}").code == 0
    return f"public.{name}"


def test_commands_on_one_tree_at_once_take_turns(pg_cluster: Any) -> None:
    """A scheduled re-check and an operator's update of the same tree, at the same moment,
    with enough changes logged that folding them splits leaves: both finish, in turn."""
    table = tracked_table(pg_cluster, "mt_turns", "g * 10", 20000)
    execute(pg_cluster.node_dsn(0), ["UPDATE mt_turns SET v = 'changed' WHERE id % 90 = 0",
                                     "INSERT INTO mt_turns SELECT g, 'new' "
                                     "FROM generate_series(300001, 302000) g"])
    execute(pg_cluster.node_dsn(1), ["DELETE FROM mt_turns WHERE id % 170 = 0"])
    commands = [("update", CLUSTER, table), ("table-diff", CLUSTER, table),
                ("update", CLUSTER, table)]
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = list(pool.map(lambda args: run_ace("mtree", *args, fresh_process=True),
                             commands))
    assert [r.code for r in runs] == [0, 1, 0], [r.stderr for r in runs]
    assert_same_diff(table)


def test_a_command_waits_for_the_tree_lock_and_says_when_it_gave_up(pg_cluster: Any) -> None:
    table = tracked_table(pg_cluster, "mt_wait", "g", 1000)
    holder = psycopg2.connect(pg_cluster.node_dsn(1))  # another command, working on n2
    holder.autocommit = True
    key = (LOCK_SPACE, lock_key(TableName("public", "mt_wait")))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", key)
        # at the default lock timeout (a minute) the command waits for the holder ...
        release = threading.Timer(3, lambda: holder.cursor().execute(
            "SELECT pg_advisory_unlock(%s, %s)", key))
        release.start()
        started = time.monotonic()
        waited = mtree("update", CLUSTER, table)
        release.join()
        assert waited.code == 0, waited.stderr
        assert time.monotonic() - started >= 3
        # ... and past it gives up in one sentence, with nothing changed
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", key)
        refused = run_ace("mtree", "update", CLUSTER, table, env={"ACE_LOCK_TIMEOUT_MS": "1000"})
        assert refused.code == 2
        assert refused.stderr.strip().splitlines() == [
            "ace: error: Another mtree command is still working on the tree of table "
            "public.mt_wait on node n2; run this one again once it has finished."]
    finally:
        holder.close()
    assert mtree("update", CLUSTER, table).code == 0


def test_a_node_lost_as_the_tree_lock_is_taken_leaves_the_others_unlocked(
        pg_cluster: Any) -> None:
    """The lock is tried on every node at once: a node gone at that moment fails the
    command in one sentence naming it, and the nodes whose lock it got are free again
    while its process lives on (a worker's does), not when that process ends."""
    table = tracked_table(pg_cluster, "mt_lost", "g", 500)
    settings = load_settings()
    request = validate_mtree_request({"action": "update", "cluster_name": CLUSTER,
                                      "table_name": table}, settings)
    with open_job(request, settings) as job:
        job.connect_lock_holders()  # connected to every node, as the command's first checks run
        assert job.holders_connected is not None
        job.holders_connected.result()
        pg_cluster.stop_node(2)
        try:
            with pytest.raises(NodeUnreachableError, match="^Node n3 cannot be reached"), \
                    tree_lock(job, TableName("public", "mt_lost")):
                pass
            # the other nodes' locks went with the failure: a command on them need not wait
            others = run_ace("mtree", "update", CLUSTER, table, "--nodes", "n1,n2",
                             env={"ACE_LOCK_TIMEOUT_MS": "1000"})
            assert others.code == 0, others.stderr
        finally:
            pg_cluster.start_node(2)
    assert mtree("update", CLUSTER, table).code == 0


def test_writers_need_no_rights_in_aces_schema(pg_cluster: Any) -> None:
    """An application role that owns nothing in ace_mtree still writes to a tracked table."""
    dsn = pg_cluster.node_dsn(0)
    on_every_node(pg_cluster, ["DROP TABLE IF EXISTS mt_app"])
    as_admin_on_every_node(pg_cluster, ["DROP ROLE IF EXISTS mt_writer",
                                        "CREATE ROLE mt_writer LOGIN PASSWORD 'pw'"])
    on_every_node(pg_cluster, [
        "CREATE TABLE mt_app (id int PRIMARY KEY, v text)",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON mt_app TO mt_writer",
    ])
    assert mtree("build", CLUSTER, "public.mt_app").code == 0
    params = psycopg2.extensions.parse_dsn(dsn)
    conn = psycopg2.connect(**{**params, "user": "mt_writer", "password": "pw"})
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO mt_app VALUES (1, 'a'), (2, 'b')")
        cur.execute("SELECT has_schema_privilege('ace_mtree', 'USAGE')")
        assert cur.fetchone()[0] is False
    conn.close()
    diff = assert_same_diff("public.mt_app")
    assert set(diff["diffs"]) == {"n1/n2", "n1/n3"}


def test_teardown_removes_every_object(pg_cluster: Any, work_table: str) -> None:
    on_every_node(pg_cluster, ["DROP TABLE IF EXISTS mt_gone",
                               "CREATE TABLE mt_gone (id int PRIMARY KEY)"])
    assert mtree("build", CLUSTER, "public.mt_gone").code == 0
    assert mtree("teardown", CLUSTER, "public.mt_gone").code == 0
    left = query(pg_cluster.node_dsn(0), "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                 "'public.mt_gone'::regclass")
    assert left == [(0,)]
    assert mtree("teardown", CLUSTER).code == 0
    for i in range(len(NODES)):
        dsn = pg_cluster.node_dsn(i)
        assert query(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'ace_mtree'") == [(0,)]
        assert query(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ace_mtree%%'") \
            == [(0,)]
    refused = mtree("table-diff", CLUSTER, work_table)
    assert refused.code == 2 and "mtree init" in refused.stderr


def test_levels_cover_every_leaf() -> None:
    assert levels_for(0) == 1 and levels_for(1) == 1 and levels_for(16) == 1
    assert levels_for(17) == 2 and levels_for(256) == 2 and levels_for(257) == 3


def test_type_matrix_passes_through_the_tree(pg_cluster: Any) -> None:
    """Every case of the table-diff type matrix, written after the build (through the
    triggers, in unusual session settings) and then hashed again by a fresh build."""
    from test_diff_types import CASES, ENUM_DDL, TABLE_DDL

    odd = ["SET extra_float_digits = 0", "SET DateStyle = 'SQL, DMY'",
           "SET IntervalStyle = 'iso_8601'", "SET bytea_output = 'escape'",
           "SET TimeZone = 'Pacific/Chatham'"]
    for i in range(len(NODES)):
        dsn = pg_cluster.node_dsn(i)
        execute(dsn, ["DROP TABLE IF EXISTS td_types", "DROP TYPE IF EXISTS td_mood"])
        for stmt in ENUM_DDL[i]:
            execute(dsn, [stmt])
        execute(dsn, [TABLE_DDL, f"INSERT INTO td_types (id) SELECT g FROM "
                                 f"generate_series(1, {len(CASES)}) g"])
    assert mtree("build", CLUSTER, "public.td_types").code == 0
    for i in range(len(NODES)):
        updates = [f"UPDATE td_types SET {case.column} = {case.values[i]} WHERE id = {n}"  # noqa: S608
                   for n, case in enumerate(CASES, start=1)]
        execute(pg_cluster.node_dsn(i), [*odd, *updates])
    through_triggers = assert_same_diff("public.td_types")
    assert through_triggers["summary"]["mismatch"] is True
    assert mtree("build", CLUSTER, "public.td_types").code == 0
    rebuilt = assert_same_diff("public.td_types")
    assert rebuilt["diffs"] == through_triggers["diffs"]


def test_a_writers_search_path_cannot_redirect_the_tracking_trigger(pg_cluster: Any) -> None:
    """The trigger runs with its table owner's rights under the writer's search path: every
    function, type and operator it uses must be pg_catalog's, whatever comes first."""
    hostile = [
        "DROP SCHEMA IF EXISTS mt_evil CASCADE", "CREATE SCHEMA mt_evil",
        "CREATE FUNCTION mt_evil.hash_record_extended(record, bigint) RETURNS bigint "
        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked function'; END $$",
        "CREATE TYPE mt_evil.text AS (hijacked int)",
        "CREATE FUNCTION mt_evil.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'hijacked operator'; END $$",
        "CREATE OPERATOR mt_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mt_evil.eq)",
    ]
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_path", *hostile,
        "CREATE TABLE mt_path (id int PRIMARY KEY, f float8, n numeric)",
        "INSERT INTO mt_path SELECT g, g / 3.0, g FROM generate_series(1, 300) g",
    ])
    assert mtree("build", CLUSTER, "public.mt_path").code == 0
    execute(pg_cluster.node_dsn(1), [
        "SET search_path = mt_evil, pg_catalog, public",
        "UPDATE public.mt_path SET f = 0.5, n = 2.50 WHERE id IN (3, 200)",
        "INSERT INTO public.mt_path VALUES (1000, 1, 1)",
        "DELETE FROM public.mt_path WHERE id = 150",
    ])
    diff = assert_same_diff("public.mt_path")
    assert sorted(int(r["id"]) for r in diff["diffs"]["n1/n2"]["n2"]) == [3, 200, 1000]
    on_every_node(pg_cluster, ["DROP SCHEMA mt_evil CASCADE"])


def test_leaves_are_grouped_in_order_with_open_ends() -> None:
    from ace_shared.mtree.buildjob import group_leaves, leaf_lowers
    cuts = [(str(i),) for i in range(1, 40)]
    ranges = group_leaves(cuts, fanout=16)
    assert leaf_lowers(ranges) == [None, *cuts]
    assert ranges[0].lower is None and ranges[-1].upper is None
    assert all(a.upper == b.lower for a, b in zip(ranges, ranges[1:], strict=False))
    assert [len(r.inner) for r in ranges] == [15, 15, 7]
    assert group_leaves([]) == [KeyRange(0, None, None, ())]


def test_runs_of_neighbouring_leaves_become_ranges_that_span_them_exactly() -> None:
    from ace_shared.mtree.compare import leaf_runs
    from ace_shared.mtree.diffjob import run_ranges
    leaves = [KeyRange(i, None if i == 0 else (str(i),), (str(i + 1),)) for i in range(40)]
    leaves += [KeyRange(50, ("60",), ("61",)), KeyRange(51, ("61",), None)]
    runs = leaf_runs(leaves)
    assert [len(r) for r in runs] == [40, 2] and [r for run in runs for r in run] == leaves
    ranges = run_ranges(runs[0], 25)
    assert [(r.index, r.lower, r.upper) for r in ranges] == [
        (0, None, ("25",)), (25, ("25",), ("40",))]
    # each range's first hash is cut at its leaves' boundaries, at most 16 parts
    assert ranges[0].inner == tuple((str(i),) for i in range(2, 25, 2))
    assert all(len(r.inner) < 16 for r in ranges)
    assert run_ranges(runs[1], 25) == [KeyRange(50, ("60",), None, (("61",),))]


def test_a_change_in_every_leaf_is_diffed_as_ranges_and_agrees(pg_cluster: Any) -> None:
    """Scattered changes in every leaf: the leaves are read as table-diff's ranges (leaf
    by leaf, the re-check took half as long again as a full diff), and the file is the
    same."""
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS mt_dense",
        "CREATE TABLE mt_dense (id bigint PRIMARY KEY, v text)",
        "INSERT INTO mt_dense SELECT g, 'v' || g FROM generate_series(1, 6000) g",
    ])
    assert mtree("build", CLUSTER, "public.mt_dense").code == 0
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_dense SET v = 'changed' WHERE id % 37 = 0",
                                     "DELETE FROM mt_dense WHERE id % 101 = 0",
                                     "INSERT INTO mt_dense VALUES (7000, 'new'), (-5, 'new')"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mt_dense SET v = 'n3' WHERE id % 53 = 0"])
    diff = assert_same_diff("public.mt_dense")
    assert diff["summary"]["mtree"]["leaves_differing"] >= 55  # of 60 leaves
    assert diff["summary"]["diff_rows"] > 200


def test_agreeing_leaves_between_differing_ones_are_read_with_them() -> None:
    from ace_shared.mtree.compare import fill_gaps
    known = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 300, 304]
    # gaps of one and two leaves are filled; of three, or across far parents, not
    assert fill_gaps([0, 8, 20, 36, 300], known) == [0, 4, 8, 12, 16, 20, 36, 300]
    assert fill_gaps([64, 300], known) == [64, 300]
    assert fill_gaps([], known) == []


def test_changes_in_most_leaves_read_the_leaves_between_and_agree(pg_cluster: Any) -> None:
    """A change every leaf and a half, over a third of the table: the agreeing leaves
    between are read too (as one run of ranges), and the rows checked are still a full
    diff's."""
    table = tracked_table(pg_cluster, "mt_most", "g", 6000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_most SET v = 'n2' WHERE id % 150 = 7 "
                                     "AND id < 2400"])
    diff = assert_same_diff(table)
    mtree_summary = diff["summary"]["mtree"]
    assert diff["summary"]["diff_rows"] == 16
    assert mtree_summary["compared_as"] == "leaves"
    assert mtree_summary["leaves_read"] > mtree_summary["leaves_differing"] >= 12


def test_a_re_check_where_most_of_the_table_differs_compares_it_as_table_diff_does(
        pg_cluster: Any) -> None:
    """Changes in every leaf: reading the leaves would read every row, so the re-check
    compares the whole table with table-diff's own ranges, says so, and finds the same
    rows; with changes in a few leaves it reads those leaves alone, and says nothing."""
    table = tracked_table(pg_cluster, "mt_whole", "g", 6000)
    execute(pg_cluster.node_dsn(1), ["UPDATE mt_whole SET v = 'n2' WHERE id % 60 = 7",
                                     "DELETE FROM mt_whole WHERE id = 3001",
                                     "INSERT INTO mt_whole VALUES (-1, 'first'), (9000, 'last')"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mt_whole SET v = 'n3' WHERE id % 500 = 11"])
    tree_run = mtree("table-diff", CLUSTER, table)
    assert tree_run.code == 1, (tree_run.stdout, tree_run.stderr)
    full_run = run_ace("table-diff", CLUSTER, table)
    assert full_run.code == 1, (full_run.stdout, full_run.stderr)
    tree, full = tree_run.diff(), full_run.diff()
    differing = tree["summary"]["mtree"]["leaves_differing"]
    assert differing >= 60  # every leaf
    assert (f"ace: note: {differing} leaves of the Merkle tree of table public.mt_whole "
            "differ, and reading them would read 100% of its rows, so the whole table was "
            "compared as table-diff compares it.") in tree_run.stderr
    assert tree["diffs"] == full["diffs"]
    for field in ("diff_rows", "total_rows_checked", "diff_rows_by_pair"):
        assert tree["summary"][field] == full["summary"][field], field
    assert tree["summary"]["diff_rows"] == 100 + 12 + 3
    assert tree["summary"]["mtree"]["compared_as"] == "table-diff"

    execute(pg_cluster.node_dsn(1), ["UPDATE mt_whole SET v = 'v' WHERE id % 60 = 7",
                                     "INSERT INTO mt_whole VALUES (3001, 'v')",
                                     "DELETE FROM mt_whole WHERE id IN (-1, 9000)"])
    execute(pg_cluster.node_dsn(2), ["UPDATE mt_whole SET v = 'v' WHERE id % 500 = 11",
                                     "UPDATE mt_whole SET v = 'late' WHERE id = 4321"])
    few = mtree("table-diff", CLUSTER, table)
    assert few.code == 1 and "whole table" not in few.stderr, (few.stdout, few.stderr)
    assert few.diff()["summary"]["mtree"]["compared_as"] == "leaves"
    assert few.diff()["summary"]["diff_rows"] == 1


def test_a_build_while_another_session_grants_on_the_schema_succeeds(pg_cluster: Any) -> None:
    """Two builds at once (of different tables) once failed: each granted the table's owner
    USAGE on ace_mtree, rewriting the schema's catalogue row the other was rewriting
    ("tuple concurrently updated"). A grant the owner already has is not made again."""
    on_every_node(pg_cluster, ["DROP TABLE IF EXISTS mt_grant",
                               "CREATE TABLE mt_grant (id int PRIMARY KEY, v text)",
                               "INSERT INTO mt_grant SELECT g, 'v' FROM generate_series(1, 300) g"])
    holder = psycopg2.connect(pg_cluster.node_dsn(0))  # the other build, mid-transaction
    holder.cursor().execute("GRANT USAGE ON SCHEMA ace_mtree TO CURRENT_USER")
    timer = threading.Timer(3.0, holder.commit)
    timer.start()
    try:
        built = mtree("build", CLUSTER, "public.mt_grant")
    finally:
        timer.join()
        holder.close()
    assert built.code == 0, built.stderr
    assert assert_same_diff("public.mt_grant")["summary"]["mismatch"] is False
