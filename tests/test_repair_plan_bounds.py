"""A repair plan from a remote caller is resolved by the API process itself (the dry run):
what it writes must cost what a rule costs, its answer must fit in bounded memory, and a
mistake must be a sentence, never a 500. The plan is read and decided as the dry run reads
and decides it (a database only for the last test's diff file)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from repair_helpers import Nodes, diff_table

from ace_shared.config import load_settings
from ace_shared.errors import RepairPlanError
from ace_shared.repair.plans.condition import Version
from ace_shared.repair.plans.decide import Decider, Table
from ace_shared.repair.plans.loader import plan_from_object
from ace_shared.repair.plans.run import preview_plan

TABLE = "public.rp_bounds"
KINDS = {"id": "integer", "qty": "integer", "note": "text"}


def _decider(rule: dict[str, Any]) -> Decider:
    plan = plan_from_object({"version": 1, "default": "skip",
                             "tables": {TABLE: {"rules": [{**rule, "do": "delete"}]}}})
    return Decider(plan.default, plan.for_table(TABLE),
                   Table(TABLE, ["n1", "n2"], ["id"], KINDS))


def _versions(qty: str) -> dict[str, Version]:
    return {n: Version({"id": "1", "qty": qty, "note": n}) for n in ("n1", "n2")}


def test_a_huge_number_in_a_condition_is_compared_at_once() -> None:
    start = time.monotonic()
    decider = _decider({"when": {"condition": "nodes.n1.qty < 1e1000000"}})
    assert decider.decide(("1",), _versions("5")).rule == "rule 1"
    assert time.monotonic() - start < 2


def test_a_fraction_never_matches_an_integer_it_would_truncate_to() -> None:
    decider = _decider({"when": {"condition": "nodes.n1.qty = 1.5"}})
    assert decider.decide(("1",), _versions("1")).rule == "the plan's default"
    whole = _decider({"when": {"condition": "nodes.n1.qty = 1.0"}})
    assert whole.decide(("1",), _versions("1")).rule == "rule 1"
    keyed = _decider({"when": {"keys": [1.5]}})  # key 1.5 is not key 1
    assert keyed.decide(("1",), _versions("1")).rule == "the plan's default"


@pytest.mark.parametrize("key", [float("inf"), float("nan")])
def test_a_key_that_is_no_number_is_a_sentence(key: float) -> None:
    with pytest.raises(RepairPlanError, match="which is not a value of table"):
        _decider({"when": {"keys": [key]}})


@pytest.mark.parametrize("condition", [
    "(" * 5000 + "nodes.n1.qty = 1" + ")" * 5000,
    "NOT " * 3000 + "nodes.n1.qty = 1",
])
def test_a_condition_nested_too_deep_is_a_sentence(condition: str) -> None:
    with pytest.raises(RepairPlanError, match="more than 32 deep"):
        _decider({"when": {"condition": condition}})
    nested = "NOT (" * 10 + "nodes.n1.qty = 1" + ")" * 10  # ten NOTs: as written
    assert _decider({"when": {"condition": nested}}).decide(("1",), _versions("1")).rule \
        == "rule 1"


def test_the_dry_run_answers_wide_rows_in_bounded_memory(pg_cluster: Any) -> None:
    """A thousand keys of 2 MB rows would be gigabytes in the API's answer: it stops at 8 MB,
    says it is truncated, and still counts every key."""
    nodes = Nodes(pg_cluster)
    nodes.on_all(["DROP TABLE IF EXISTS public.rp_wide",
                  "CREATE TABLE public.rp_wide (id int PRIMARY KEY, note text)",
                  "INSERT INTO public.rp_wide SELECT i, 'same' FROM generate_series(1, 12) i"])
    nodes.execute("n2", ["UPDATE public.rp_wide SET note = pg_catalog.repeat('x', 2000000)"])
    path, _ = diff_table("public.rp_wide")
    plan = {"version": 1, "default": {"action": "keep", "node": "n2"},
            "tables": {"public.rp_wide": {}}}
    answer = preview_plan({"cluster_name": "testclus", "table_name": "public.rp_wide",
                           "diff_file": str(path), "repair_plan": plan}, load_settings())
    assert answer["key_count"] == 12 and answer["truncated"]
    assert 0 < len(answer["keys"]) < 12
    assert len(json.dumps(answer)) < 16 << 20
