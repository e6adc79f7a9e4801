"""A table-repair's options (:data:`TABLE_REPAIR`) and a validated request: cluster and diff file matched.

:func:`validate_repair_request` is what every front door calls before a repair
is run or queued; it reads the cluster definition and the diff file but never
connects to a database. Option rules (each rejection says why):

* ``source_of_truth`` is required, except with ``fix_nulls`` or
  ``bidirectional``, which take no source (every node is both giver and
  taker); a source given with them is ignored and the outcome notes it;
* ``upsert_only`` and ``insert_only`` exclude each other (one updates rows
  that differ, the other never does);
* ``bidirectional`` needs ``insert_only``: it only ever copies missing rows;
* ``fix_nulls`` fills NULL columns only, so it excludes ``upsert_only``,
  ``insert_only`` and ``bidirectional``;
* a repair plan (``repair_plan``, or a resolved one with ``apply_plan``) decides
  every row itself (docs/repair-plans.md), so it takes no source and none of
  the modes above; ``apply_plan`` needs no diff file (the resolved plan names
  it); ``allow_stale`` and ``plan_out`` go with a plan only.
* ``recovery_mode`` needs no source (it picks one, see
  :mod:`ace_shared.repair.recovery`), and like ``preserve_origin`` it copies one
  node's rows to the others, so both exclude ``fix_nulls`` and ``bidirectional``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ace_shared.config import Settings
from ace_shared.difffile.file import DiffFile, open_for_table
from ace_shared.errors import BadOptionError, DiffFileError
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.ident import TableName, parse_table_name
from ace_shared.options import (
    BOOL,
    CLUSTER_NAME,
    DIFF_FILE,
    NO_WAIT,
    OBJECT,
    QUIET,
    TABLE_NAME,
    TEXT,
    Command,
    Option,
    Style,
    dbname_option,
    read_options,
)

TABLE_REPAIR = Command(
    "table-repair", "Repair a table's rows on the nodes a diff file shows to differ.", (
        CLUSTER_NAME,
        TABLE_NAME,
        replace(DIFF_FILE, positional_too=True, required=False),
        Option("source_of_truth", TEXT,
               "Node whose rows are right; required unless {fix_nulls}, {bidirectional} or a "
               "repair plan ({repair_plan}, {apply_plan}) is given.",
               positional_too=True),
        dbname_option("the diff file's"),
        Option("dry_run", BOOL, "Show what would change; write nothing."),
        replace(QUIET, help="Print only the report path."),
        Option("generate_report", BOOL, "Write a JSON report of every row changed."),
        Option("upsert_only", BOOL, "Insert and update, never delete."),
        Option("insert_only", BOOL, "Only insert missing rows; never update or delete."),
        Option("bidirectional", BOOL, "With {insert_only}: copy missing rows both ways."),
        Option("fix_nulls", BOOL, "Fill columns NULL on one node and set on the other."),
        Option("fire_triggers", BOOL, "Let ordinary triggers fire on the repaired nodes "
               "(ENABLE ALWAYS triggers fire either way)."),
        Option("recovery_mode", BOOL, "After a node failed (a diff against its origin): "
               "repair only rows that came from it, from the survivor that received most of "
               "its changes unless a source of truth is named."),
        Option("preserve_origin", BOOL, "Give each repaired row its source's origin and "
               "commit time (one transaction per origin and commit time, not one per node)."),
        Option("repair_plan", OBJECT, "A repair plan deciding row by row which version wins "
               "(YAML or JSON; docs/repair-plans.md); takes the place of {source_of_truth}."),
        Option("plan_out", TEXT, "Save the resolved plan (each key's final row per node) to "
               "this file, to review and then run with {apply_plan}.", api=False),
        Option("apply_plan", TEXT, "Apply a resolved plan saved by {plan_out}, exactly as it "
               "is; rows changed since are skipped and listed.", api=False),
        Option("allow_stale", BOOL, "With {apply_plan}: write rows changed since the plan was "
               "resolved, too."),
        NO_WAIT,
    ))
# The API's dry run of a plan (POST /ace/table-repair/plan): the same options, declared above.
TABLE_REPAIR_PLAN = Command(
    "table-repair-plan", "Resolve a repair plan over a diff file and return it; writes nothing.",
    (CLUSTER_NAME, TABLE_NAME, DIFF_FILE, TABLE_REPAIR.option("dbname"),
     replace(TABLE_REPAIR.option("repair_plan"), required=True,
             help="The repair plan, as a JSON object (docs/repair-plans.md).",
             required_hint=": the plan, as a JSON object")),
    route="/table-repair/plan")
BOOL_OPTIONS = tuple(o.name for o in TABLE_REPAIR.api_options if o.kind == BOOL)

MODE_SOURCE = "source_of_truth"
MODE_BIDIRECTIONAL = "bidirectional"
MODE_FIX_NULLS = "fix_nulls"
MODE_PLAN = "plan"


@dataclass(frozen=True)
class RepairRequest:
    """What the user asked for, checked; JSON-safe through :meth:`to_dict`."""

    cluster_name: str
    table: TableName
    diff_file: str
    source_of_truth: str | None = None
    dbname: str | None = None
    dry_run: bool = False
    quiet: bool = False
    generate_report: bool = False
    upsert_only: bool = False
    insert_only: bool = False
    bidirectional: bool = False
    fix_nulls: bool = False
    fire_triggers: bool = False
    recovery_mode: bool = False
    preserve_origin: bool = False
    allow_stale: bool = False
    repair_plan: dict[str, Any] | None = None  # the plan as checked, JSON-safe
    plan_out: str | None = None
    apply_plan: str | None = None
    role: str | None = None
    ignored_source: str | None = None

    @property
    def mode(self) -> str:
        if self.repair_plan is not None or self.apply_plan:
            return MODE_PLAN
        if self.fix_nulls:
            return MODE_FIX_NULLS
        if self.bidirectional:
            return MODE_BIDIRECTIONAL
        return MODE_SOURCE

    @property
    def deletes_allowed(self) -> bool:
        return self.mode == MODE_SOURCE and not (self.upsert_only or self.insert_only)

    def to_dict(self) -> dict[str, Any]:
        """The request as options again (what a queued task receives)."""
        out: dict[str, Any] = {
            "cluster_name": self.cluster_name, "table_name": self.table.display,
            "diff_file": self.diff_file,
            "source_of_truth": self.source_of_truth or self.ignored_source,
            "dbname": self.dbname, "role": self.role,
            "repair_plan": self.repair_plan, "plan_out": self.plan_out,
            "apply_plan": self.apply_plan,
        }
        for name in BOOL_OPTIONS:
            out[name] = getattr(self, name)
        return out


def _check_modes(flags: dict[str, bool], style: Style) -> None:
    """The rules between the flags (see the module's docstring)."""
    def name(option: str) -> str:
        return TABLE_REPAIR.label(option, style)

    upsert, insert, fix, both = (name(n) for n in ("upsert_only", "insert_only", "fix_nulls",
                                                   "bidirectional"))
    if flags["upsert_only"] and flags["insert_only"]:
        raise BadOptionError(f"{upsert} and {insert} exclude each other: {upsert} "
                             f"updates rows that differ, {insert} never does; choose one.")
    if flags["fix_nulls"]:
        for other in ("upsert_only", "insert_only", "bidirectional"):
            if flags[other]:
                raise BadOptionError(f"{fix} cannot be combined with {name(other)}: it only "
                                     "fills NULL columns of rows present on both nodes.")
    for flag in ("recovery_mode", "preserve_origin"):
        for other in ("fix_nulls", "bidirectional"):
            if flags[flag] and flags[other]:
                raise BadOptionError(f"{name(flag)} cannot be combined with {name(other)}: it "
                                     "copies one node's rows to the others; choose one.")
    if flags["bidirectional"] and not flags["insert_only"]:
        raise BadOptionError(f"{both} works only with {insert}: it copies rows missing "
                             "on either node to the other and never updates or deletes; add "
                             f"{insert}.")


def _check_plan(values: dict[str, Any], flags: dict[str, bool], style: Style) -> None:
    """The rules of a plan repair (see the module's docstring)."""
    def name(option: str) -> str:
        return TABLE_REPAIR.label(option, style)

    plan, applied = values["repair_plan"] is not None, bool(values["apply_plan"])
    if plan and applied:
        raise BadOptionError(f"{name('repair_plan')} and {name('apply_plan')} exclude each "
                             f"other: {name('apply_plan')} writes a plan already resolved; "
                             "give one.")
    if not (plan or applied):
        for option in ("allow_stale", "plan_out"):
            if values[option]:
                raise BadOptionError(f"{name(option)} goes with {name('repair_plan')} or "
                                     f"{name('apply_plan')} only.")
        return
    for option in ("upsert_only", "insert_only", "bidirectional", "fix_nulls",
                   "recovery_mode", "preserve_origin"):
        if flags[option]:
            raise BadOptionError(f"{name(option)} cannot be combined with a repair plan: the "
                                 "plan's rules say what each row gets; write it there.")
    if values["source_of_truth"]:
        raise BadOptionError(f"{name('source_of_truth')} cannot be combined with a repair "
                             "plan: write it as the plan's default, {action: keep, node: ...}.")
    if applied and values["plan_out"]:
        raise BadOptionError(f"{name('plan_out')} cannot be combined with "
                             f"{name('apply_plan')}: that plan is resolved already.")


def check_repair_options(raw: dict[str, Any], style: Style = "api") -> RepairRequest:
    """Check the options alone (no file, no cluster); raise for the first bad one."""
    values = read_options(TABLE_REPAIR, raw, Settings(), style)  # none read the settings
    flags = {name: values[name] for name in BOOL_OPTIONS}
    _check_plan(values, flags, style)
    plan = values["repair_plan"]
    if plan is not None:
        # slow on purpose: YAML, jsonschema and the condition grammar (about 90 ms) are
        # loaded by the repairs that bring a plan, not by every command's start
        from ace_shared.repair.plans.loader import load_plan_file, plan_from_object
        plan = (load_plan_file(plan) if isinstance(plan, str) else plan_from_object(plan)).source
    if plan is not None or values["apply_plan"]:
        return RepairRequest(
            cluster_name=values["cluster_name"], table=parse_table_name(values["table_name"]),
            diff_file=values["diff_file"] or "", dbname=values["dbname"],
            role=_role(raw), repair_plan=plan, plan_out=values["plan_out"],
            apply_plan=values["apply_plan"], **flags)
    if not values["diff_file"]:
        raise BadOptionError(f"{TABLE_REPAIR.label('diff_file', style)} is required: the path "
                             "of a diff file from table-diff.")
    _check_modes(flags, style)
    source = values["source_of_truth"]
    ignored = None
    if flags["fix_nulls"] or flags["bidirectional"]:
        ignored, source = source, None
    elif not source and not flags["recovery_mode"]:
        fix, both, plan = (TABLE_REPAIR.label(n, style)
                           for n in ("fix_nulls", "bidirectional", "repair_plan"))
        raise BadOptionError(f"{TABLE_REPAIR.label('source_of_truth', style)} is required: "
                             f"name the node whose rows are right (only {fix} and {both} "
                             f"repairs, and a {plan}, need none).")
    return RepairRequest(
        cluster_name=values["cluster_name"], table=parse_table_name(values["table_name"]),
        diff_file=values["diff_file"], source_of_truth=source, dbname=values["dbname"],
        role=_role(raw), ignored_source=ignored, **flags,
    )


def _role(raw: dict[str, Any]) -> str | None:
    role = raw.get("role")
    return (role.strip() or None) if isinstance(role, str) else None


def load_repair_inputs(raw: dict[str, Any], settings: Settings,
                       style: Style = "api") -> tuple[RepairRequest, Cluster, DiffFile]:
    """Validate a request against its cluster and its diff file's summary."""
    request = check_repair_options(raw, style)
    if request.apply_plan:  # the resolved plan holds all it needs: its diff file may be gone
        # here, not at the top: plans/run.py builds on this module (RepairRequest)
        from ace_shared.repair.plans.run import open_resolved_plan
        return open_resolved_plan(request, settings)
    cluster, diff = open_for_table(settings, request.cluster_name, request.table,
                                   request.dbname, request.diff_file)
    if request.recovery_mode and not diff.summary.get("against_origin"):
        raise BadOptionError(
            f"{TABLE_REPAIR.label('recovery_mode', style)} needs a diff file made with "
            f"{'--against-origin' if style == 'cli' else 'against_origin'} (it names the "
            "failed node); run table-diff with it first.")
    if request.source_of_truth:
        cluster.node(request.source_of_truth)
        if request.source_of_truth not in diff.nodes:
            raise DiffFileError(
                f"Source of truth {request.source_of_truth} is not one of the nodes the diff "
                f"compared ({', '.join(diff.nodes) or 'none'}); pick one of them.")
    # workers may run elsewhere: hand on the file's absolute path
    return replace(request, diff_file=str(diff.path)), cluster, diff


def validate_repair_request(raw: dict[str, Any], settings: Settings,
                            style: Style = "api") -> RepairRequest:
    """Check every option, the cluster and the diff file's summary; touches no database.

    The rows are checked by the work itself, which fails with a sentence
    naming the file if one is bad (see :func:`open_for_table`).
    """
    request, _, _ = load_repair_inputs(raw, settings, style)
    return request
