"""A repair plan from a remote caller is resolved by the API process itself (the dry run):
what it writes must cost what a rule costs, and a mistake must be a sentence, never a 500.
No database: the plan is read and decided as the dry run reads and decides it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ace_shared.errors import RepairPlanError
from ace_shared.repair.plans.condition import Version
from ace_shared.repair.plans.decide import Decider, Table
from ace_shared.repair.plans.loader import plan_from_object

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
