"""Auto-repair: polling Spock's exception log, and settling insert-insert conflicts.

Runs against the real test nodes with Spock's exception tables and a
recording ``spock.repair_mode`` stand-in created on n1 and n2 (n3 has no
Spock at all), and ends with the two Celery tasks run by real workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from spock_fixtures import (
    drop_spock,
    install_spock,
    log_exception,
    repair_mode_calls,
    run_sql,
)

from ace_shared.autorepair.run import poll_exceptions, repair_exceptions
from ace_shared.config import load_settings

CLUSTER = "testclus"
ORIGIN = 49152
TABLE = ("public", "ar_items")
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)

CREATE_TABLE = """
CREATE TABLE public.ar_items (
    id int PRIMARY KEY,
    name text,
    "Price %" numeric(10,2),
    tags jsonb,
    seen timestamptz,
    name_len int GENERATED ALWAYS AS (length(name)) STORED
);
CREATE TABLE public.ar_writes (n serial PRIMARY KEY, id int, repair_mode text);
CREATE FUNCTION public.ar_note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ar_writes (id, repair_mode)
    VALUES (NEW.id, current_setting('ace_test.repair_mode', true));
    RETURN NEW;
END $$;
CREATE TRIGGER ar_note_write AFTER UPDATE ON public.ar_items
    FOR EACH ROW EXECUTE FUNCTION public.ar_note_write();
ALTER TABLE public.ar_items ENABLE ALWAYS TRIGGER ar_note_write;
INSERT INTO public.ar_items (id, name, "Price %", tags, seen)
VALUES (1, 'local one', 1.00, '{"from": "local"}', '2024-01-01 00:00:00+00'),
       (2, 'local two', 2.00, NULL, NULL);
"""
DROP_TABLE = ("DROP TABLE IF EXISTS public.ar_items, public.ar_writes; "
              "DROP FUNCTION IF EXISTS public.ar_note_write()")

REMOTE_ROW = {"id": 1, "name": "remote 'one'", "Price %": 9.5,
              "tags": {"from": "remote", "n": [1, 2]}, "seen": "2024-06-01 12:30:00.123456+00"}


class Nodes:
    """DSNs of the test nodes by name, and shortcuts for the exception tables."""

    def __init__(self, cluster: Any) -> None:
        self.dsn = {f"n{i + 1}": cluster.node_dsn(i) for i in range(3)}

    def sql(self, node: str, *statements: str, params: Any = None) -> list[tuple[Any, ...]]:
        return run_sql(self.dsn[node], *statements, params=params)

    def statuses(self, node: str) -> list[tuple[Any, ...]]:
        """(remote_commit_ts, remote_xid, status) of every failed transaction."""
        return self.sql(node, "SELECT remote_commit_ts, remote_xid, status "
                              "FROM spock.exception_status ORDER BY 1, 2")

    def details(self, node: str) -> list[tuple[Any, ...]]:
        """(remote_xid, command_counter, status, resolution_details, resolved) of every command."""
        return self.sql(node, "SELECT remote_xid, command_counter, status, resolution_details, "
                              "resolved_at IS NOT NULL FROM spock.exception_status_detail "
                              "ORDER BY 1, 2")

    def item(self, node: str, key: int) -> tuple[Any, ...]:
        return self.sql(node, 'SELECT name, "Price %%"::text, tags, seen::text, name_len '
                              "FROM public.ar_items WHERE id = %s", params=(key,))[0]


@pytest.fixture
def nodes(pg_cluster: Any) -> Iterator[Nodes]:
    """Spock (5.x layout) and the table ``ar_items`` on n1 and n2; nothing of Spock on n3."""
    found = Nodes(pg_cluster)
    for node in ("n1", "n2"):
        install_spock(found.dsn[node])
        found.sql(node, DROP_TABLE, CREATE_TABLE)
    yield found
    for node in found.dsn:
        found.sql(node, DROP_TABLE)
        drop_spock(found.dsn[node])


def _now(nodes: Nodes) -> datetime:
    return nodes.sql("n1", "SELECT now()")[0][0]


def poll() -> dict[str, Any]:
    return poll_exceptions(CLUSTER, None, load_settings()).to_dict()


def repair() -> dict[str, Any]:
    return repair_exceptions(CLUSTER, None, load_settings()).to_dict()


def _log_insert(nodes: Nodes, node: str, commit_ts: datetime, xid: int, row: dict[str, Any],
                command_counter: int = 1, table: tuple[str, str] = TABLE) -> None:
    log_exception(nodes.dsn[node], origin=ORIGIN, commit_ts=commit_ts, xid=xid, table=table,
                  new_row=row, command_counter=command_counter)


def test_poll_copies_each_log_entry_once(nodes: Nodes) -> None:
    ts = _now(nodes)
    _log_insert(nodes, "n1", ts, 700, REMOTE_ROW, command_counter=1)
    _log_insert(nodes, "n1", ts, 700, {"id": 2, "name": "x"}, command_counter=2)
    _log_insert(nodes, "n1", ts + HOUR, 701, {"id": 3})
    _log_insert(nodes, "n2", ts, 800, REMOTE_ROW)

    first = poll()
    assert first["nodes"]["n1"] == {"state": "done", "new_transactions": 2, "new_commands": 3}
    assert first["nodes"]["n2"] == {"state": "done", "new_transactions": 1, "new_commands": 1}
    assert first["nodes"]["n3"]["state"] == "skipped"
    assert "no Spock exception tables" in first["nodes"]["n3"]["note"]
    assert first["totals"] == {"new_transactions": 3, "new_commands": 4}
    assert nodes.statuses("n1") == [(ts, 700, "PENDING"), (ts + HOUR, 701, "PENDING")]
    assert [d[:3] for d in nodes.details("n1")] == [(700, 1, "PENDING"), (700, 2, "PENDING"),
                                                    (701, 1, "PENDING")]

    again = poll()
    assert again["totals"] == {"new_transactions": 0, "new_commands": 0}
    assert len(nodes.details("n1")) == 3 and len(nodes.statuses("n1")) == 2
    assert len(nodes.details("n2")) == 1

    _log_insert(nodes, "n1", ts, 700, {"id": 4}, command_counter=3)  # a later entry, same xact
    assert poll()["nodes"]["n1"] == {"state": "done", "new_transactions": 0, "new_commands": 1}


def test_a_newer_remote_insert_overwrites_the_local_row_in_repair_mode(nodes: Nodes) -> None:
    _log_insert(nodes, "n1", _now(nodes) + HOUR, 710, REMOTE_ROW)
    poll()
    result = repair()

    assert result["nodes"]["n1"] == {"state": "done", "insert_conflicts": 1, "updated": 1,
                                     "kept": 0, "unresolved": 0, "busy": 0, "other_pending": 0}
    assert nodes.item("n1", 1) == ("remote 'one'", "9.50", {"from": "remote", "n": [1, 2]},
                                   "2024-06-01 12:30:00.123456+00", 12)
    assert nodes.item("n1", 2)[0] == "local two"
    (detail,) = nodes.details("n1")
    assert detail[2] == "RESOLVED" and detail[4] is True
    assert detail[3]["action"] == "updated local row to remote values"
    assert detail[3]["reason"] == "remote commit is newer"
    assert nodes.statuses("n1")[0][2] == "RESOLVED"
    # repair mode on, the write, repair mode off: one transaction, triggers quiet
    calls = repair_mode_calls(nodes.dsn["n1"])
    assert [c[0] for c in calls] == [True, False]
    assert calls[0][1] == calls[1][1] == nodes.sql("n1", "SELECT xmin::text FROM ar_items "
                                                         "WHERE id = 1")[0][0]
    assert calls[0][2] == "replica"
    assert nodes.sql("n1", "SELECT id, repair_mode FROM ar_writes") == [(1, "true")]
    # n2 had nothing to repair; the next run finds nothing to do
    assert repair_mode_calls(nodes.dsn["n2"]) == []
    assert repair()["totals"]["insert_conflicts"] == 0


def test_an_older_remote_insert_keeps_the_local_row(nodes: Nodes) -> None:
    _log_insert(nodes, "n2", _now(nodes) - HOUR, 720, REMOTE_ROW)
    poll()
    result = repair()

    assert result["nodes"]["n2"]["kept"] == 1 and result["nodes"]["n2"]["updated"] == 0
    assert nodes.item("n2", 1)[:2] == ("local one", "1.00")
    (detail,) = nodes.details("n2")
    assert detail[2] == "RESOLVED" and detail[4] is True
    assert detail[3]["action"] == "kept local row"
    assert detail[3]["reason"] == "local commit is newer"
    assert nodes.statuses("n2")[0][2] == "RESOLVED"
    assert repair_mode_calls(nodes.dsn["n2"]) == []
    assert nodes.sql("n2", "SELECT count(*) FROM ar_writes") == [(0,)]


def test_the_newest_of_several_remote_inserts_wins(nodes: Nodes) -> None:
    now = _now(nodes)
    _log_insert(nodes, "n1", now + HOUR, 730, {**REMOTE_ROW, "name": "older remote"})
    _log_insert(nodes, "n1", now + 2 * HOUR, 731, {**REMOTE_ROW, "name": "newest remote"})
    poll()
    counts = repair()["nodes"]["n1"]
    assert (counts["updated"], counts["kept"]) == (1, 1)
    assert nodes.item("n1", 1)[0] == "newest remote"


def test_other_failures_stay_pending_and_hold_their_transaction_open(nodes: Nodes) -> None:
    ts = _now(nodes) + HOUR
    _log_insert(nodes, "n1", ts, 740, {"id": 2, "name": "remote two"}, command_counter=1)
    log_exception(nodes.dsn["n1"], origin=ORIGIN, commit_ts=ts, xid=740, table=TABLE,
                  operation="UPDATE", new_row={"id": 1, "name": "updated"}, command_counter=2)
    poll()
    result = repair()

    assert result["nodes"]["n1"]["updated"] == 1 and result["nodes"]["n1"]["other_pending"] == 1
    assert [d[:3] for d in nodes.details("n1")] == [(740, 1, "RESOLVED"), (740, 2, "PENDING")]
    assert nodes.statuses("n1")[0][2] == "PENDING"
    assert nodes.item("n1", 1)[0] == "local one"


def test_a_conflict_on_a_missing_table_is_unresolved_and_the_others_go_on(nodes: Nodes) -> None:
    ts = _now(nodes) + HOUR
    _log_insert(nodes, "n1", ts, 750, {"id": 1}, table=("public", "ar_gone"))
    _log_insert(nodes, "n1", ts + HOUR, 751, {"id": 9, "name": "no such row"})
    _log_insert(nodes, "n1", ts + SECOND, 752, {"id": 2, "name": "remote two", "nope": 1})
    _log_insert(nodes, "n1", ts + 2 * SECOND, 753, {"id": 1, "name": "remote one"})
    poll()
    result = repair()["nodes"]["n1"]

    assert (result["updated"], result["unresolved"]) == (1, 3)
    details = {d[0]: d for d in nodes.details("n1")}
    assert details[750][2] == "UNRESOLVED" and details[750][4] is False
    assert "ar_gone does not exist" in details[750][3]["error"]
    assert "no column nope" in details[752][3]["error"]
    assert "no local row" in details[751][3]["reason"]
    assert details[753][2] == "RESOLVED"
    assert dict((s[1], s[2]) for s in nodes.statuses("n1")) == {
        750: "UNRESOLVED", 751: "UNRESOLVED", 752: "UNRESOLVED", 753: "RESOLVED"}
    assert nodes.item("n1", 1)[0] == "remote one"
    assert nodes.item("n1", 2)[0] == "local two"


@pytest.mark.parametrize("layout", ["4.0", "4.0.1"])
def test_spock_40_layout_without_retry_errored_at(nodes: Nodes, layout: str) -> None:
    install_spock(nodes.dsn["n2"], layout=layout)
    now = _now(nodes)
    _log_insert(nodes, "n2", now + HOUR, 760, {"id": 1, "name": "remote one"})
    _log_insert(nodes, "n2", now - HOUR, 761, {"id": 2, "name": "remote two"})
    if layout == "4.0.1":  # a retry of 760 that failed again: one command in the status tables
        log_exception(nodes.dsn["n2"], origin=ORIGIN, commit_ts=now + HOUR, xid=760,
                      table=TABLE, new_row={"id": 1, "name": "remote one, retried"},
                      retry_errored_at=now + 2 * HOUR)
    assert poll()["nodes"]["n2"] == {"state": "done", "new_transactions": 2, "new_commands": 2}
    assert poll()["totals"] == {"new_transactions": 0, "new_commands": 0}

    counts = repair()["nodes"]["n2"]
    assert (counts["updated"], counts["kept"]) == (1, 1)
    expected = "remote one, retried" if layout == "4.0.1" else "remote one"
    assert nodes.item("n2", 1)[0] == expected
    assert nodes.item("n2", 2)[0] == "local two"
    assert [d[2] for d in nodes.details("n2")] == ["RESOLVED", "RESOLVED"]
    assert [s[2] for s in nodes.statuses("n2")] == ["RESOLVED", "RESOLVED"]


def test_without_repair_mode_the_write_runs_as_replica(nodes: Nodes) -> None:
    install_spock(nodes.dsn["n1"], repair_mode=False)
    _log_insert(nodes, "n1", _now(nodes) + HOUR, 770, {"id": 1, "name": "remote one"})
    poll()
    assert repair()["nodes"]["n1"]["updated"] == 1
    assert nodes.item("n1", 1)[0] == "remote one"
    # the ALWAYS trigger fired; repair mode was never set in this session
    assert nodes.sql("n1", "SELECT repair_mode FROM ar_writes") == [(None,)]


@pytest.fixture
def cluster_with_a_dead_node(nodes: Nodes) -> Iterator[str]:
    """Cluster ``arclus``: the test nodes plus n4, on a port where nothing listens."""
    cluster_dir = Path(load_settings().cluster_dir)
    doc = json.loads((cluster_dir / CLUSTER / f"{CLUSTER}.json").read_text())
    doc["cluster_name"] = "arclus"
    dead = dict(doc["node_groups"][0], name="n4", port="1")
    doc["node_groups"].append(dead)
    path = cluster_dir / "arclus" / "arclus.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    yield "arclus"
    path.unlink()
    path.parent.rmdir()


def test_a_node_that_is_down_is_reported_and_the_others_are_served(
        nodes: Nodes, cluster_with_a_dead_node: str) -> None:
    _log_insert(nodes, "n1", _now(nodes) + HOUR, 780, {"id": 1, "name": "remote one"})
    polled = poll_exceptions(cluster_with_a_dead_node, "acedb", load_settings()).to_dict()
    assert polled["nodes"]["n4"]["state"] == "unreachable"
    assert "Node n4 cannot be reached" in polled["nodes"]["n4"]["note"]
    assert polled["nodes"]["n1"]["new_commands"] == 1
    repaired = repair_exceptions(cluster_with_a_dead_node, None, load_settings()).to_dict()
    assert repaired["nodes"]["n4"]["state"] == "unreachable"
    assert repaired["nodes"]["n1"]["updated"] == 1
    assert repaired["nodes"]["n3"]["state"] == "skipped"


def _run_task(fleet: Any, name: str, *args: Any) -> dict[str, Any]:
    code = ("import json, sys\nfrom ace_workers.app import app\n"
            f"r = app.send_task({name!r}, args={list(args)!r})\n"
            "print(json.dumps(r.get(timeout=60)))")
    done = subprocess.run([sys.executable, "-c", code], env=fleet.env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_fleet_runs_the_poll_and_the_repair(nodes: Nodes, fleet: Any) -> None:
    _log_insert(nodes, "n2", _now(nodes) + HOUR, 790, {"id": 2, "name": "remote two"})
    polled = _run_task(fleet, "ace.auto_repair_poll", CLUSTER, None)
    assert polled["database"] == "acedb"
    assert polled["nodes"]["n2"] == {"state": "done", "new_transactions": 1, "new_commands": 1}
    assert polled["nodes"]["n3"]["state"] == "skipped"

    repaired = _run_task(fleet, "ace.auto_repair_repair", CLUSTER, "acedb")
    assert repaired["totals"]["updated"] == 1
    assert nodes.item("n2", 2)[0] == "remote two"
    assert nodes.details("n2")[0][2] == "RESOLVED"

    unknown = _run_task(fleet, "ace.auto_repair_poll", "nosuchcluster", None)
    assert "Cluster nosuchcluster is not defined" in unknown["error"]
