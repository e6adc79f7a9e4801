"""``ace mtree ...``: Merkle trees kept on every node, so a re-check reads only what changed."""

from __future__ import annotations

import os
from typing import Any

import click

from ace_api.cli.diff import report_diff
from ace_api.cli.exits import EXIT_SAME
from ace_api.cli.options import AceCommand, build_command
from ace_api.cli.output import json_wanted, print_json
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.diff.summary import DiffSummary
from ace_shared.mtree.request import MTREE_COMMANDS, MtreeRequest, validate_mtree_request
from ace_shared.tasks.ids import new_task_id
from ace_shared.words import and_list, nodes_phrase, plural


def _runner(action: str) -> Any:
    def run(values: dict[str, Any], settings: Settings) -> int:
        request = validate_mtree_request({**values, "action": action}, settings, "cli")
        label = f"mtree {action}" + (f" {request.table.display}" if request.table else "")
        if settings.BROKER_URL:
            result = _on_fleet(request, settings, label, bool(values.get("no_wait")))
            if result is None:  # --no-wait: the task id is printed
                return EXIT_SAME
        else:
            result = _here(request, settings, label)
        for sentence in _healed(result):
            click.echo(f"ace: note: {sentence}", err=True)
        if action == "table-diff":
            code = report_diff(DiffSummary.from_dict(result), request.quiet)
            line = tree_sentence(result.get("mtree"))
            if line and not request.quiet and not json_wanted():
                click.echo(line)
            return code
        if json_wanted():
            print_json(result)
        elif not request.quiet:
            for line in mtree_sentences(result):
                click.echo(line)
        note = _unwatched_note(result) if action == "init" else None
        if note:
            click.echo(note, err=True)
        return EXIT_SAME
    return run


def _healed(result: dict[str, Any]) -> list[str]:
    """The sentences of an update (or a re-check's update) that hashed leaves again from
    their table (after a TRUNCATE on a node, or a stale leaf), and of a re-check that
    compared the whole table because most of it differed."""
    mtree = result.get("mtree")
    found = (mtree if isinstance(mtree, dict) else result).get("healed")
    notes = [str(s) for s in found] if isinstance(found, list) else []
    note = mtree.get("note") if isinstance(mtree, dict) else None
    return notes + ([str(note)] if note else [])


def tree_sentence(mtree: Any) -> str | None:
    """How a re-check read the leaves that differ: by their kept keys, or whole."""
    if not isinstance(mtree, dict) or mtree.get("compared_as") != "leaves":
        return None  # compared as table-diff: the note said so
    differing = int(mtree.get("leaves_differing", 0))
    if not differing:
        return None
    by_keys, whole = int(mtree.get("leaves_by_keys", 0)), int(mtree.get("leaves_read", 0))
    return (f"{plural(differing, 'leaf', 'leaves')} of the Merkle tree "
            f"{'differs' if differing == 1 else 'differ'}: {by_keys:,} checked by the keys "
            f"changed since {'it' if differing == 1 else 'they'} last agreed, "
            f"{plural(whole, 'leaf', 'leaves')} read whole.")


def _by_node(counts: Any, word: str) -> str:
    """``n1: 20,000 rows, n2: 19,997 rows`` from ``{node: count}``."""
    if not isinstance(counts, dict):
        return ""
    return ", ".join(f"{node}: {plural(int(n), word)}" for node, n in counts.items())


def mtree_sentences(result: dict[str, Any]) -> list[str]:
    """What an ``ace mtree`` action did, in sentences (``--json`` prints ``result`` itself)."""
    action = result.get("action")
    nodes = nodes_phrase(result.get("nodes", []))
    table = result.get("table")
    if action == "init":
        return [f"Merkle tree schema {result.get('schema', 'ace_mtree')} is ready on {nodes}."]
    if action == "build":
        lines = [f"Built the Merkle tree of {table} on {nodes}: "
                 f"{plural(int(result.get('blocks', 0)), 'block')} of up to "
                 f"{plural(int(result.get('block_rows', 0)), 'row')}."]
        rows = _by_node(result.get("rows_by_node"), "row")
        return lines + ([f"Rows hashed: {rows}."] if rows else [])
    if action == "update":
        folded = _by_node(result.get("changes_folded"), "change")
        line = f"Updated the Merkle tree of {table} on {nodes}"
        line += f" (changes folded in: {folded})." if folded else "."
        touched = result.get("leaves_touched")
        if touched is not None:
            line += (f" {plural(int(touched), 'block')} rehashed, "
                     f"{int(result.get('leaves_split', 0))} split, "
                     f"{int(result.get('leaves_merged', 0))} merged.")
        return [line]
    if action == "teardown":
        removed = result.get("trees_removed")
        if table:
            return [f"Removed the Merkle tree of {table} from {nodes}."]
        count = max(removed.values(), default=0) if isinstance(removed, dict) else 0
        return [f"Removed ACE's Merkle tree schema and {plural(int(count), 'tree')} "
                f"from {nodes}."]
    return [f"mtree {action}: done on {nodes}."]


def _unwatched_note(result: dict[str, Any]) -> str | None:
    """One sentence when ``init`` could not (re)create the event trigger on some node.

    Only a superuser may create event triggers, and ACE's own login is not one
    (docs/security.md): init still succeeds, but the operator must know the rest
    is an administrator's step.
    """
    watched = result.get("alter_table_watched")
    if not isinstance(watched, dict):
        return None
    missing = sorted(node for node, ok in watched.items() if not ok)
    if not missing:
        return None
    return (f"ace: note: this login may not create event triggers, so on {and_list(missing)} "
            "init did not (re)create the one that marks trees stale after ALTER TABLE; unless "
            "an administrator has, run 'ace mtree init' once with the admin cluster file "
            "(docs/security.md).")


def _here(request: MtreeRequest, settings: Settings, label: str) -> dict[str, Any]:
    from ace_shared.mtree.run import run_mtree  # loaded only by the command that runs it
    bar = ProgressBar(label, enabled=request.action in ("build", "table-diff")
                      and not request.quiet and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        return run_mtree(request, settings, new_task_id("mtree"), progress=bar)
    finally:
        bar.close()


def _on_fleet(request: MtreeRequest, settings: Settings, label: str,
              no_wait: bool) -> dict[str, Any] | None:
    from ace_api.cli.fetch import local_summary
    from ace_api.cli.fleet import run_on_fleet  # Celery loads only for a fleet: 1 s of every start
    task_id = new_task_id("mtree")
    done = run_on_fleet("mtree", request.to_dict(), settings, task_id,
                        cluster_name=request.cluster_name,
                        table_name=request.table.display if request.table else None,
                        no_wait=no_wait, quiet=request.quiet, label=label, unit="steps")
    if done is None:
        return None
    if request.action != "table-diff":
        return done
    return local_summary(done["summary"], done, task_id, settings, "mtree")


class _MtreeGroup(click.Group):
    command_class = AceCommand


mtree = _MtreeGroup("mtree", help="Merkle trees of row hashes kept on every node: init, build, "
                    "update, table-diff, teardown.")
for _action, _command in MTREE_COMMANDS.items():
    mtree.add_command(build_command(_command, _runner(_action), name=_action))
