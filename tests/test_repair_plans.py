"""Repair plans: rules deciding row by row which version each node ends with.

The first tests check the plan's logic without a database (the grammar of
conditions, precedence, ties, the loader's line-numbered errors, the published
schema). The rest build ``rp_plan`` on the three test nodes, make them
diverge, diff, repair with a plan, and look at what each node holds, and at
what a new diff still finds.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from client_helpers import api_client, as_caller
from repair_helpers import NODES, Nodes, ace, assert_error, diff_table, output_files, repair

from ace_shared.config import load_settings
from ace_shared.errors import ConfigError, PermissionDeniedError, RepairPlanError
from ace_shared.repair.plans.condition import Condition, Version
from ace_shared.repair.plans.decide import Decider, Table
from ace_shared.repair.plans.loader import plan_from_object, plan_from_text
from ace_shared.repair.plans.schema import schema_text
from ace_shared.tasks.schedule import scheduled_diffs

REPO = Path(__file__).resolve().parent.parent
TABLE = "public.rp_plan"
DDL = ("CREATE TABLE rp_plan (id int PRIMARY KEY, status text, qty int, "
       "updated_at timestamptz, note text)")
BASE = ("INSERT INTO rp_plan SELECT i, 'new', i, '2024-01-01 00:00:00+00', 'n' || i "
        "FROM generate_series(1, 10) i")
KINDS = {"id": "integer", "status": "text", "qty": "integer", "updated_at": "timestamptz",
         "note": "text"}


def _row(i: int = 1, **cols: str | None) -> dict[str, str | None]:
    return {"id": str(i), "status": "new", "qty": "1", "updated_at": "2024-01-01 00:00:00+00",
            "note": "x", **cols}


def _decider(text: str, nodes: tuple[str, ...] = ("n1", "n2"), meta: bool = False) -> Decider:
    plan = plan_from_text(text, "The repair plan p.yaml")
    return Decider(plan.default, plan.for_table(TABLE),
                   Table(TABLE, list(nodes), ["id"], KINDS, meta))


# ----- without a database -------------------------------------------------------------------

def test_conditions_compare_as_the_columns_types_with_sql_logic() -> None:
    c = Condition("nodes.n1.qty > 9 AND nodes.n2.status IN ('shipped', 'done') "
                  "AND NOT nodes.n2.note IS NULL")
    c.bind(["n1", "n2"], KINDS)
    assert c.test({"n1": Version(_row(qty="10")), "n2": Version(_row(status="done"))})
    # as text '10' < '9'; as integers it is not
    assert not c.test({"n1": Version(_row(qty="8")), "n2": Version(_row(status="done"))})
    # a node lacking the row: unknown, so no match, and NOT unknown is unknown too
    assert not c.test({"n1": Version(None), "n2": Version(_row(status="done"))})
    assert not Condition("NOT nodes.n1.qty > 1").test({"n1": Version(None)})
    gone = Condition("nodes.n2 IS MISSING OR nodes.n1.updated_at >= '2024-01-01T01:00:00+01'")
    gone.bind(["n1", "n2"], KINDS)
    assert gone.test({"n1": Version(_row()), "n2": Version(_row())})  # same instant


@pytest.mark.parametrize(("text", "words"), [
    ("nodes.n1.qty >", "expects"),
    ("nodes.n1.qty = 'x", "never closed"),
    ("nodes.n1 = 1", "IS PRESENT or IS MISSING"),
    ("qty = 1", "nodes.<node>.<column>"),
])
def test_a_bad_condition_says_where(text: str, words: str) -> None:
    plan = f'version: 1\ntables:\n  {TABLE}:\n    rules:\n      - when:\n' \
           f'          condition: "{text}"\n        do: skip\n'
    with pytest.raises(RepairPlanError, match="line 6") as err:
        plan_from_text(plan, "The repair plan p.yaml")
    assert words in str(err.value)


@pytest.mark.parametrize(("plan", "line", "words"), [
    ("version: 1\ntables:\n  public.rp_plan:\n    rules:\n      - do: {action: keep}\n",
     5, "'node' is required"),
    ("version: 1\ntables:\n  public.rp_plan:\n    rulez: []\n", 4, "'rulez' is not allowed"),
    ("version: 1\ntables:\n  public.rp_plan:\n    rules:\n"
     "      - do: {action: freshest, by: commit_ts}\n", 5, "'tie' is required"),
    ("version: 1\nversion: 1\n", 2, "given twice"),
    ("version: 1\ntables: [\n", 3, "neither valid YAML nor JSON"),
])
def test_a_bad_plan_fails_with_its_line(plan: str, line: int, words: str) -> None:
    with pytest.raises(RepairPlanError) as err:
        plan_from_text(plan, "The repair plan p.yaml")
    assert f"p.yaml, line {line}" in str(err.value) and words in str(err.value)


def test_the_published_schema_is_the_one_plans_are_checked_against() -> None:
    assert (REPO / "docs" / "repair-plan.schema.json").read_text() == schema_text()


def test_precedence_override_then_first_rule_then_defaults() -> None:
    decider = _decider(f"""
version: 1
default: delete
tables:
  {TABLE}:
    default: {{action: keep, node: n2}}
    overrides:
      - keys: [3]
        do: skip
    rules:
      - name: big
        when: {{key_range: {{from: 5}}}}
        do: {{action: keep, node: n1}}
      - name: bigger
        when: {{key_range: {{from: 7}}}}
        do: delete
""")
    v = {"n1": Version(_row(qty="1")), "n2": Version(_row(qty="2"))}
    assert decider.decide(("3",), v).rule == "override 1"
    assert decider.decide(("8",), v).rule == 'rule 1 "big"'
    assert decider.decide(("2",), v).rule == "the table's default"
    other = Decider(plan_from_text("version: 1\ndefault: delete\ntables: {public.x: {}}",
                                   "p").default, None, Table(TABLE, ["n1", "n2"], ["id"], KINDS))
    assert other.decide(("2",), v).rule == "the plan's default"
    bare = _decider(f"version: 1\ntables:\n  {TABLE}:\n    rules: []\n")
    with pytest.raises(RepairPlanError, match="no default"):
        bare.decide(("2",), v)


def test_a_tie_is_never_settled_silently() -> None:
    v = {"n1": Version(_row(qty="1")), "n2": Version(_row(qty="2"))}  # same updated_at
    plan = (f"version: 1\ntables:\n  {TABLE}:\n    default: {{action: freshest, "
            "by: {column: updated_at}, tie: TIE}\n")
    with pytest.raises(RepairPlanError, match="tie for key 1: nodes n1 and n2"):
        _decider(plan.replace("TIE", "fail")).decide(("1",), v)
    skipped = _decider(plan.replace("TIE", "skip")).decide(("1",), v)
    assert skipped.writes == {} and skipped.tie == "skipped"
    preferred = _decider(plan.replace("TIE", "{prefer: [n2]}")).decide(("1",), v)
    assert preferred.writes == {"n1": _row(qty="2")} and preferred.tie == "prefer n2"
    # equal freshness and equal rows is no tie
    same = {"n1": Version(_row()), "n2": Version(_row()), "n3": Version(None)}
    d = _decider(plan.replace("TIE", "fail"), ("n1", "n2", "n3")).decide(("1",), same)
    assert d.writes == {"n3": _row()} and d.tie is None


def test_merge_takes_each_column_as_told_and_writes_one_row_everywhere() -> None:
    d = _decider(f"""
version: 1
tables:
  {TABLE}:
    default:
      action: merge
      columns: {{status: {{from: n3}}, qty: greatest, updated_at: least}}
      others: {{from: [n2, n1]}}
""", ("n1", "n2", "n3")).decide(("1",), {
        "n1": Version(_row(qty="9", note="a")),
        "n2": Version(None),
        "n3": Version(_row(status="done", qty="10", updated_at="2023-06-01 00:00:00+00"))})
    want = _row(status="done", qty="10", updated_at="2023-06-01 00:00:00+00", note="a")
    assert d.writes == {"n1": want, "n2": want, "n3": want}


def test_commit_times_are_needed_only_by_rules_that_use_them() -> None:
    plan = (f"version: 1\ntables:\n  {TABLE}:\n    default: {{action: freshest, "
            "by: commit_ts, tie: fail}\n")
    with pytest.raises(RepairPlanError, match="diff was made without commit times"):
        _decider(plan)
    d = _decider(plan, meta=True).decide(("1",), {
        "n1": Version(_row(qty="1"), "2024-05-01 10:00:00+00", "n1"),
        "n2": Version(_row(qty="2"), "2024-05-01 09:00:00+00", "n2")})
    assert d.writes == {"n2": _row(qty="1")}


def test_a_request_body_plan_names_the_path_of_its_mistake() -> None:
    with pytest.raises(RepairPlanError, match=r"at tables\.public\.rp_plan\.rules\[0\]"):
        plan_from_object({"version": 1, "tables": {TABLE: {"rules": [{"do": {"action": "x"}}]}}})


# ----- on the nodes -------------------------------------------------------------------------

@pytest.fixture
def nodes(pg_cluster: Any) -> Nodes:
    n = Nodes(pg_cluster)
    n.on_all(["DROP TABLE IF EXISTS rp_plan CASCADE", DDL, BASE])
    return n


def _write_plan(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(nodes: Nodes, node: str) -> dict[int, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in nodes.query(
        node, "SELECT id, status, qty, updated_at::text, note FROM rp_plan ORDER BY id")}


def _split_brain(nodes: Nodes) -> None:
    """n2 and n3 went their own ways from n1 for a while."""
    nodes.execute("n1", ["INSERT INTO rp_plan VALUES (101, 'new', 1, '2024-02-01', 'n1 order')",
                         "UPDATE rp_plan SET status = 'shipped' WHERE id = 2",
                         "UPDATE rp_plan SET qty = 50, updated_at = '2024-03-01' WHERE id = 3"])
    nodes.execute("n2", ["INSERT INTO rp_plan VALUES (201, 'new', 2, '2024-02-02', 'n2 order')",
                         "UPDATE rp_plan SET status = 'paid' WHERE id = 2",
                         "UPDATE rp_plan SET qty = 70, updated_at = '2024-04-01' WHERE id = 3",
                         "UPDATE rp_plan SET note = 'hand' WHERE id = 4",
                         "DELETE FROM rp_plan WHERE id = 5"])
    nodes.execute("n3", ["UPDATE rp_plan SET note = 'odd' WHERE id = 6",
                         "UPDATE rp_plan SET note = 'left alone' WHERE id = 7"])


PLAN = f"""
version: 1
default: skip
tables:
  {TABLE}:
    overrides:
      - name: hand-picked
        keys: [4]
        do: {{action: keep, node: n2}}
    rules:
      - name: orders on one side
        when: {{diff: only_on}}
        do: keep_both
      - name: status machine
        when:
          columns_differ: status
          condition: "nodes.n1.status = 'shipped' OR nodes.n2.status = 'shipped'"
        do: {{action: merge, columns: {{status: {{from: n1}}}}, others: {{from: n1}}}}
      - name: newest wins
        when: {{columns_differ: [qty, updated_at]}}
        do: {{action: freshest, by: {{column: updated_at}}, tie: fail}}
      - name: deleted on n2
        when: {{missing_on: n2}}
        do: delete
      - name: only n3's odd one
        when: {{keys: [6], diff: values_differ}}
        do: {{action: take, node: n1, mode: upsert}}
"""


def test_plan_out_into_a_missing_folder_is_one_sentence_and_writes_nothing(
        nodes: Nodes, tmp_path: Path) -> None:
    _split_brain(nodes)
    path, _ = diff_table(TABLE)
    plan = _write_plan(tmp_path, PLAN)
    before = output_files()
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan), "--dry-run", "--plan-out", str(tmp_path / "missing" / "r.jsonl"))
    assert_error(run, "--plan-out", "does not exist; create it or give another path")
    assert output_files() == before


def test_a_plan_on_three_nodes_leaves_exactly_what_it_skipped(nodes: Nodes,
                                                              tmp_path: Path) -> None:
    _split_brain(nodes)
    path, _ = diff_table(TABLE)
    plan = _write_plan(tmp_path, PLAN)
    out = tmp_path / "resolved.jsonl"
    before = {n: _rows(nodes, n) for n in NODES}
    dry = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan), "--dry-run", "--plan-out", str(out))
    assert dry.code == 0, dry.stderr
    assert {n: _rows(nodes, n) for n in NODES} == before  # a dry run writes nothing
    assert 'rule 1 "orders on one side": keep both, matched 2 keys' in dry.stdout
    assert 'override 1 "hand-picked"' in dry.stdout and "the plan's default" in dry.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["table"] == TABLE
    decided = {tuple(x["key"]): x["rule"] for x in lines[1:]}
    assert decided[("7",)] == "the plan's default"  # skipped: n3's note stays
    run = ace("table-repair", "testclus", TABLE, "--apply-plan", str(out))
    assert run.code == 0, run.stderr
    after = {n: _rows(nodes, n) for n in NODES}
    for n in NODES:
        assert after[n][101][3] == "n1 order" and after[n][201][3] == "n2 order"
        assert after[n][2][0] == "shipped"  # n1's status won
        assert after[n][3][1] == 70  # n2's later update_at won
        assert after[n][4][3] == "hand"  # the override
        assert 5 not in after[n]  # deleted where n2 had deleted it
    assert after["n3"][6][3] == "n6"  # take n1's version, upsert
    again, content = diff_table(TABLE)
    left = {(pair, r["id"]) for pair, sides in content["diffs"].items()
            for rows in sides.values() for r in rows}
    assert left == {("n1/n3", "7"), ("n2/n3", "7")}


def _resolved_keeping_n1(tmp_path: Path, diff_file: Path) -> Path:
    """A dry run of the plan "keep n1's version" over ``diff_file``; the resolved plan."""
    plan = _write_plan(tmp_path, f"version: 1\ndefault: {{action: keep, node: n1}}\n"
                                 f"tables: {{{TABLE}: {{}}}}\n")
    out = tmp_path / "r.jsonl"
    assert ace("table-repair", "testclus", TABLE, "--diff-file", str(diff_file),
               "--repair-plan", str(plan), "--dry-run", "--plan-out", str(out)).code == 0
    return out


def test_a_row_changed_after_the_dry_run_is_skipped_and_listed(nodes: Nodes,
                                                                tmp_path: Path) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 99 WHERE id IN (1, 2)"])
    path, _ = diff_table(TABLE)
    out = _resolved_keeping_n1(tmp_path, path)
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 77 WHERE id = 2"])
    nodes.execute("n1", ["UPDATE rp_plan SET note = 'late' WHERE id = 3"])  # not a key to fix
    path.unlink()  # the resolved plan holds all it needs
    run = ace("table-repair", "testclus", TABLE, "--apply-plan", str(out))
    assert run.code == 0, run.stderr
    assert "1 key changed on a node since the plan saw it and was skipped: 2" in run.stdout
    assert _rows(nodes, "n2")[1][1] == 1 and _rows(nodes, "n2")[2][1] == 77
    forced = ace("table-repair", "testclus", TABLE, "--apply-plan", str(out), "--allow-stale")
    assert forced.code == 0, forced.stderr
    assert _rows(nodes, "n2")[2][1] == 2


def test_a_row_changed_on_the_node_whose_version_wins_is_stale_too(nodes: Nodes,
                                                                    tmp_path: Path) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 99 WHERE id = 1"])
    path, _ = diff_table(TABLE)
    out = _resolved_keeping_n1(tmp_path, path)
    nodes.execute("n1", ["UPDATE rp_plan SET note = 'late' WHERE id = 1"])
    run = ace("table-repair", "testclus", TABLE, "--apply-plan", str(out))
    assert run.code == 0, run.stderr
    assert "1 key changed on a node since the plan saw it and was skipped: 1" in run.stdout
    assert _rows(nodes, "n2")[1][1] == 99


def test_a_row_the_table_refuses_fails_before_any_change_naming_the_rule(
        nodes: Nodes, tmp_path: Path) -> None:
    nodes.execute("n2", ["ALTER TABLE rp_plan ADD CONSTRAINT small CHECK (qty < 100)"])
    try:
        nodes.execute("n1", ["UPDATE rp_plan SET qty = 500 WHERE id = 1"])
        nodes.execute("n3", ["UPDATE rp_plan SET note = 'z' WHERE id = 1"])
        path, _ = diff_table(TABLE)
        plan = _write_plan(tmp_path, f"""
version: 1
tables:
  {TABLE}:
    rules:
      - name: most
        do: {{action: merge, columns: {{qty: greatest}}, others: {{from: n3}}}}
""")
        before = {n: _rows(nodes, n) for n in NODES}
        run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path),
                  "--repair-plan", str(plan))
        assert_error(run, 'rule 1 "most"', "node n2", "check constraint")
        assert {n: _rows(nodes, n) for n in NODES} == before
    finally:
        nodes.execute("n2", ["ALTER TABLE rp_plan DROP CONSTRAINT small"])


def test_freshest_by_commit_time_reads_the_diffs_commit_times(nodes: Nodes,
                                                               tmp_path: Path) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 42 WHERE id = 1",
                         "UPDATE rp_plan SET qty = 43 WHERE id = 2"])
    path, content = diff_table(TABLE)
    plan = _write_plan(tmp_path, f"version: 1\ntables:\n  {TABLE}:\n    default: "
                                 "{action: freshest, by: commit_ts, tie: fail}\n")
    # a diff file without commit times (written before rows carried them)
    for sides in content["diffs"].values():
        for rows in sides.values():
            for r in rows:
                del r["_ace_commit_ts"], r["_ace_origin"]
    path.write_text(json.dumps(content))
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan))
    assert_error(run, "diff was made without commit times")
    stamps = {("n1", "1"): "2024-05-01 10:00:00+00", ("n2", "1"): "2024-05-01 09:00:00+00",
              ("n1", "2"): "2024-05-01 08:00:00+00", ("n2", "2"): "2024-05-01 09:00:00+00",
              ("n3", "1"): "2024-05-01 10:00:00+00", ("n3", "2"): "2024-05-01 08:00:00+00"}
    for sides in content["diffs"].values():
        for node, rows in sides.items():
            for r in rows:
                r["_ace_commit_ts"], r["_ace_origin"] = stamps[(node, r["id"])], node
    path.write_text(json.dumps(content))
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan))
    assert run.code == 0, run.stderr
    assert [_rows(nodes, n)[1][1] for n in NODES] == [1, 1, 1]
    assert [_rows(nodes, n)[2][1] for n in NODES] == [43, 43, 43]


def test_a_plan_excludes_the_other_repair_modes(nodes: Nodes, tmp_path: Path) -> None:
    path, _ = diff_table(TABLE)
    plan = _write_plan(tmp_path, "version: 1\ndefault: skip\ntables: {public.rp_plan: {}}\n")
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan), "--source-of-truth", "n1")
    assert_error(run, "--source-of-truth", "repair plan")
    bad = _write_plan(tmp_path, "version: 1\ntables:\n  public.rp_plan:\n    rules:\n"
                                "      - do: {action: keep, node: n9}\n", "bad.yaml")
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 5 WHERE id = 1"])
    path, _ = diff_table(TABLE)
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(bad))
    assert_error(run, "rule 1", "node n9")


def test_a_row_changed_while_the_plan_is_applied_rolls_every_node_back(
        nodes: Nodes, tmp_path: Path) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 99 WHERE id IN (1, 2)"])
    path, _ = diff_table(TABLE)
    plan = _write_plan(tmp_path, f"version: 1\ndefault: {{action: keep, node: n1}}\n"
                                 f"tables: {{{TABLE}: {{}}}}\n")
    # another session holds row 2 on n2, changed but not yet committed: the check before
    # the repair still reads the row the plan saw, the repair's own check waits for it
    other = psycopg2.connect(nodes.dsn("n2"))
    try:
        with other.cursor() as cur:
            cur.execute("UPDATE rp_plan SET qty = 55 WHERE id = 2")
        timer = threading.Timer(1.5, other.commit)
        timer.start()
        run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path),
                  "--repair-plan", str(plan))
        timer.join()
    finally:
        other.close()
    assert_error(run, "key 2 changed on node n2 while the plan was being applied")
    assert _rows(nodes, "n2")[1][1] == 99 and _rows(nodes, "n2")[2][1] == 55


def test_the_report_says_which_rule_decided_each_row(nodes: Nodes, tmp_path: Path) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 99 WHERE id IN (1, 2)",
                         "DELETE FROM rp_plan WHERE id = 3"])
    path, _ = diff_table(TABLE)
    plan = _write_plan(tmp_path, f"""
version: 1
default: {{action: keep, node: n1}}
tables:
  {TABLE}:
    overrides:
      - {{name: mine, keys: [2], do: {{action: keep, node: n2}}}}
""")
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan), "--generate-report")
    assert run.code == 0, run.stderr
    report = json.loads(run.path_after("Report").read_text())
    decided = {(node, r["id"]): r["_ace_rule"] for node, c in report["changes"].items()
               for cat in ("inserted", "updated", "deleted") for r in c.get(cat, [])}
    assert decided == {("n2", "1"): "the plan's default", ("n2", "3"): "the plan's default",
                       ("n1", "2"): 'override 1 "mine"', ("n3", "2"): 'override 1 "mine"'}
    assert [r["rule"] for r in report["plan_rules"]][:2] == ['override 1 "mine"',
                                                              "the plan's default"]


def test_the_rest_dry_run_returns_the_resolved_plan_and_changes_nothing(nodes: Nodes) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET status = 'paid' WHERE id = 1",
                         "INSERT INTO rp_plan VALUES (300, 'new', 1, '2024-01-01', 'n2 only')"])
    path, _ = diff_table(TABLE)
    # an admin sees every diff file (a caller sees only those its own table-diffs wrote)
    settings = load_settings().with_overrides(API_ADMIN_CNS="ace")
    client = api_client(settings)
    plan = {"version": 1, "default": "skip", "tables": {TABLE: {"rules": [
        {"name": "paid", "when": {"condition": "nodes.n2.status = 'paid'"},
         "do": {"action": "keep", "node": "n2"}},
        {"when": {"only_on": "n2"}, "do": "keep_both"}]}}}
    body = {"cluster_name": "testclus", "table_name": TABLE, "diff_file": str(path),
            "repair_plan": plan}
    before = {n: _rows(nodes, n) for n in NODES}
    answer = client.post("/ace/table-repair/plan", json=body,
                         environ_base=as_caller())
    assert answer.status_code == 200, answer.json
    got = answer.json
    rules = {r["rule"]: r for r in got["rules"]}
    assert rules['rule 1 "paid"']["writes"] == {"n1": {"insert": 0, "update": 1, "delete": 0},
                                                 "n3": {"insert": 0, "update": 1, "delete": 0}}
    assert rules["rule 2"]["matched"] == 1 and got["key_count"] == 2
    by_key = {tuple(k["key"]): k for k in got["keys"]}
    assert by_key[("300",)]["write"]["n1"]["note"] == "n2 only"
    assert by_key[("1",)]["seen"]["n2"]["status"] == "paid"
    assert got["resolved_plan"].startswith("plans/")  # inside the output directory
    assert (settings.output_dir / got["resolved_plan"]).is_file()
    assert {n: _rows(nodes, n) for n in NODES} == before
    bad = client.post("/ace/table-repair/plan", json={**body, "repair_plan": {
        "version": 1, "tables": {TABLE: {"rules": [{"do": {"action": "keep", "node": "n7"}}]}}}},
        environ_base=as_caller())
    assert bad.status_code == 400
    assert bad.json == {"error": "rule 1 of table public.rp_plan names node n7, which the diff "
                                 "did not compare (n1, n2 and n3); fix the plan."}
    refused = client.post("/ace/table-repair", json={**body, "repair_plan": {"version": 1}},
                          environ_base=as_caller())
    assert refused.status_code == 400
    assert refused.json == {"error": "The repair plan: 'tables' is required here; "
                                     "see docs/repair-plans.md."}
    doc = client.get("/ace/swagger.json", environ_base=as_caller()).json
    assert doc["paths"]["/table-repair/plan"]["post"]["summary"].startswith("Resolve a repair")
    assert doc["definitions"]["TableRepairPlanRequest"]["properties"]["repair_plan"][
        "type"] == "object"
    assert "ResolvedPlan" in doc["definitions"]


def test_key_ranges_kinds_of_difference_and_the_take_modes(nodes: Nodes, tmp_path: Path) -> None:
    nodes.execute("n1", ["DELETE FROM rp_plan WHERE id IN (1, 5)",
                         "UPDATE rp_plan SET note = 'n1 says' WHERE id IN (2, 6, 9)"])
    nodes.execute("n3", ["DELETE FROM rp_plan WHERE id = 9"])
    path, _ = diff_table(TABLE)
    plan = _write_plan(tmp_path, f"""
version: 1
tables:
  {TABLE}:
    rules:
      - name: low keys follow n1
        when: {{key_range: {{to: 2}}}}
        do: {{action: take, node: n1, mode: replace}}
      - name: missing ones come back
        when: {{key_range: {{from: 3, to: 8}}, diff: missing}}
        do: {{action: take, node: n2, mode: insert_only}}
      - name: others only fill gaps
        when: {{diff: [missing]}}
        do: {{action: take, node: n1, mode: insert_only}}
    default: skip
""")
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(plan))
    assert run.code == 0, run.stderr
    rows = {n: _rows(nodes, n) for n in NODES}
    assert all(1 not in rows[n] for n in NODES)  # replace: n1 lacks it, so it goes
    assert all(rows[n][2][3] == "n1 says" for n in NODES)
    assert all(rows[n][5][3] == "n5" for n in NODES)  # insert-only from n2, where missing
    assert rows["n2"][6][3] == "n6" and rows["n1"][6][3] == "n1 says"  # skipped
    assert rows["n3"][9][3] == "n1 says" and rows["n2"][9][3] == "n9"  # only the gap filled


def test_a_scheduled_job_cannot_carry_a_plan() -> None:
    job = {"name": "nightly", "cluster_name": "c", "table_name": "public.t",
           "args": {"repair_plan": "/etc/plan.yaml"}}
    with pytest.raises(ConfigError, match="Scheduled job nightly names repair_plan"):
        scheduled_diffs((job,), ({"job_name": "nightly", "enabled": True,
                                  "run_frequency": "1h"},), "5m")


def test_every_plan_in_the_documentation_is_a_valid_plan() -> None:
    text = (REPO / "docs" / "repair-plans.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    assert len(blocks) >= 5
    for block in blocks:
        plan_from_text(block, "a plan in docs/repair-plans.md")


def test_a_node_whose_version_the_diff_does_not_show_leaves_the_key_undecided() -> None:
    from ace_shared.difffile.file import DiffFile, DiffPair
    from ace_shared.repair.plans.resolve import versions_of

    diff = DiffFile(Path("d.json"), {"nodes": ["n1", "n2", "n3"]},
                    [DiffPair("n1", "n2", 0), DiffPair("n1", "n3", 1), DiffPair("n2", "n3", 2)])
    row = json.dumps(_row())
    other = json.dumps(_row(qty="2"))
    # listed by n1/n2 only: n3 agreed with n1 (else n1/n3 would list it) and with n2
    # (else n2/n3 would) - impossible, so the file is cut short and n3 is unknown
    assert versions_of(diff, ["n1", "n2", "n3"], [(0, "n1", row, None, None),
                                                   (0, "n2", other, None, None)]) is None
    both = versions_of(diff, ["n1", "n2", "n3"], [(0, "n1", row, None, None),
                                                  (0, "n2", other, None, None),
                                                  (2, "n2", other, "2024-01-01", "n2")])
    assert both is not None and both["n3"].row is None and both["n2"].commit_ts == "2024-01-01"


def test_ties_on_the_nodes_are_counted_skipped_or_refused(nodes: Nodes, tmp_path: Path) -> None:
    # same updated_at, different contents: a tie; key 2 is fresher on n2: no tie
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 7 WHERE id = 1",
                         "UPDATE rp_plan SET qty = 8, updated_at = '2024-06-01 00:00+00' "
                         "WHERE id = 2"])
    path, _ = diff_table(TABLE)
    text = (f"version: 1\ntables:\n  {TABLE}:\n    default: {{action: freshest, "
            "by: {column: updated_at}, tie: TIE}\n")
    refused = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
                  str(_write_plan(tmp_path, text.replace("TIE", "fail"), "fail.yaml")))
    assert_error(refused, "the table's default", "tie for key 1: nodes n1, n2 and n3")
    run = ace("table-repair", "testclus", TABLE, "--diff-file", str(path), "--repair-plan",
              str(_write_plan(tmp_path, text.replace("TIE", "skip"), "skip.yaml")))
    assert run.code == 0, run.stderr
    assert "matched 2 keys (1 tie, 1 skipped)" in run.stdout
    assert [_rows(nodes, n)[1][1] for n in NODES] == [1, 7, 1]  # left for a person
    assert [_rows(nodes, n)[2][1] for n in NODES] == [8, 8, 8]


@pytest.fixture
def plan_roles(nodes: Nodes) -> Any:
    drop = ["DROP OWNED BY rpp_writer, rpp_reader", "DROP ROLE rpp_writer",
            "DROP ROLE rpp_reader"]
    for node in NODES:
        if nodes.query(node, "SELECT count(*) FROM pg_roles "
                             "WHERE rolname IN ('rpp_writer', 'rpp_reader')")[0][0] == 2:
            nodes.execute_as_admin(node, drop)
        nodes.execute_as_admin(node, ["CREATE ROLE rpp_writer", "CREATE ROLE rpp_reader",
                                      "GRANT ALL ON rp_plan TO rpp_writer",
                                      "GRANT SELECT ON rp_plan TO rpp_reader"])
    for role in ("rpp_writer", "rpp_reader"):
        nodes.cluster.serve_role(role, repair=True)
    yield
    for node in NODES:
        nodes.execute_as_admin(node, drop)


@pytest.mark.usefixtures("plan_roles")
def test_a_plan_repairs_as_the_requesting_role_with_replication_silenced(nodes: Nodes) -> None:
    nodes.execute("n2", ["UPDATE rp_plan SET qty = 99 WHERE id = 1",
                         "CREATE TABLE IF NOT EXISTS rp_who (who text, srr text)",
                         "GRANT ALL ON rp_who TO rpp_writer",
                         "CREATE OR REPLACE FUNCTION rp_who() RETURNS trigger LANGUAGE plpgsql "
                         "AS $$ BEGIN INSERT INTO public.rp_who VALUES (current_user, "
                         "current_setting('session_replication_role')); RETURN NULL; END $$",
                         "CREATE TRIGGER rp_who AFTER UPDATE ON rp_plan FOR EACH ROW "
                         "EXECUTE FUNCTION rp_who()",
                         "ALTER TABLE rp_plan ENABLE ALWAYS TRIGGER rp_who"])
    try:
        path, _ = diff_table(TABLE)
        plan = {"version": 1, "default": {"action": "keep", "node": "n1"},
                "tables": {TABLE: {}}}
        before = {n: _rows(nodes, n) for n in NODES}
        with pytest.raises(PermissionDeniedError, match="node n2"):
            repair(TABLE, path, repair_plan=plan, role="rpp_reader")
        assert {n: _rows(nodes, n) for n in NODES} == before
        repair(TABLE, path, repair_plan=plan, role="rpp_writer")
        assert _rows(nodes, "n2")[1][1] == 1
        assert nodes.query("n2", "SELECT who, srr FROM rp_who") == [("rpp_writer", "replica")]
    finally:
        nodes.execute("n2", ["DROP TABLE IF EXISTS rp_who", "DROP FUNCTION IF EXISTS rp_who() "
                             "CASCADE"])


def test_conditions_read_each_versions_commit_time_and_origin() -> None:
    plan = f"""
version: 1
tables:
  {TABLE}:
    rules:
      - name: came from n3
        when: {{condition: "origin(n2) = 'n3' AND commit_ts(n2) > commit_ts(n1)"}}
        do: {{action: keep, node: n2}}
    default: skip
"""
    with pytest.raises(RepairPlanError, match='rule 1 "came from n3" .* without commit times'):
        _decider(plan)
    decider = _decider(plan, meta=True)
    late = {"n1": Version(_row(), "2024-05-01 10:00:00+00", "n1"),
            "n2": Version(_row(qty="5"), "2024-05-01 11:00:00+00", "n3")}
    assert decider.decide(("1",), late).writes == {"n1": _row(qty="5")}
    early = {"n1": Version(_row(), "2024-05-01 12:00:00+00", "n1"),
             "n2": Version(_row(qty="5"), "2024-05-01 11:00:00+00", "n3")}
    assert decider.decide(("1",), early).rule == "the table's default"


def test_composite_keys_and_quoted_names() -> None:
    kinds = {"region": "text", "n": "integer", "Unit Price": "number"}  # as values.py reads them
    plan = plan_from_text("""
version: 1
default: skip
tables:
  public.rp_plan:
    overrides:
      - {keys: [["EU", 7]], do: delete}
    rules:
      - name: cheap
        when: {key_range: {from: ["EU", 2], to: ["EU", 9]},
               condition: 'nodes.n1."Unit Price" < 10.5'}
        do: {action: keep, node: n2}
""", "p")
    decider = Decider(plan.default, plan.for_table(TABLE),
                      Table(TABLE, ["n1", "n2"], ["region", "n"], kinds))
    row = {"region": "EU", "n": "10", "Unit Price": "9.99"}
    other = {**row, "Unit Price": "11"}
    v = {"n1": Version(row), "n2": Version(other)}
    assert decider.decide(("EU", "7"), v).rule == "override 1"
    assert decider.decide(("EU", "3"), v).rule == 'rule 1 "cheap"'
    assert decider.decide(("EU", "10"), v).rule == "the plan's default"  # 10 > 9, not '10' < '9'
    assert decider.decide(("US", "3"), v).rule == "the plan's default"
    with pytest.raises(RepairPlanError, match="key has 2 columns"):
        Decider(None, plan_from_text("version: 1\ntables:\n  public.rp_plan:\n    overrides:\n"
                                     "      - {keys: [7], do: delete}\n", "p").for_table(TABLE),
                Table(TABLE, ["n1", "n2"], ["region", "n"], kinds))


@pytest.mark.parametrize(("type_name", "kind"), [
    ("integer", "integer"), ("bigint", "integer"), ("numeric(10,2)", "number"),
    ("double precision", "number"), ("boolean", "boolean"), ("date", "date"),
    ("timestamp(3) with time zone", "timestamptz"), ("timestamp without time zone", "timestamp"),
    ("character varying(20)", "text"), ("integer[]", "text"), ("public.mood", "text"),
])
def test_values_compare_as_their_columns_types(type_name: str, kind: str) -> None:
    from ace_shared.repair.plans.values import value_kind
    assert value_kind(type_name) == kind
