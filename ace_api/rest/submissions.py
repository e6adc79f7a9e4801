"""Turning a checked request into a queued task: validate, record, enqueue, answer.

The API never touches a cluster's data for these: the same core validators as
the CLI check the options (and read the cluster definition file, so an unknown
cluster is a 404 before anything is queued), then the task is recorded and
sent to the fleet. A table-diff's filter is also checked on the nodes' catalogs,
as the caller's role (the diff's own check, so a bad filter is a 400 now rather
than a failed task later). The caller's certificate name travels with the task as
``role``, so each database session it opens runs as that role.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import current_app

from ace_api.rest.access import AccessPolicy
from ace_api.rest.difffiles import resolve_diff_file
from ace_api.rest.errors import ApiError
from ace_api.rest.limits import check_open_tasks
from ace_shared.config import Settings
from ace_shared.diff.filtercheck import check_filter_before_queueing
from ace_shared.diff.request import validate_diff_request
from ace_shared.errors import BrokerUnreachableError, TaskError
from ace_shared.nodes.cluster import load_cluster
from ace_shared.repair.plans.run import preview_plan
from ace_shared.repair.request import validate_repair_request
from ace_shared.rerun.request import validate_rerun_request
from ace_shared.tasks.filestore import active_store
from ace_shared.tasks.ids import is_task_id, new_task_id
from ace_shared.tasks.store import TaskStore

logger = logging.getLogger(__name__)


def iso_millis(moment: datetime) -> str:
    """``2024-03-15T12:34:56.789Z``, as the API reference shows times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _options(request: Any) -> dict[str, Any]:
    if hasattr(request, "to_dict"):
        return dict(request.to_dict())
    return dataclasses.asdict(request)


def require_served_role(cluster_name: str, identity: str) -> None:
    """Refuse (403) a caller whose role the API may not serve on this cluster."""
    current_app.extensions["ace_caller_gate"].require(cluster_name, identity)


def _enqueue(task_type: str, options: dict[str, Any], identity: str, settings: Settings,
             *, cluster_name: str, table_name: str | None) -> dict[str, str]:
    from ace_workers.client import submit  # the Celery app is built on first use

    require_served_role(cluster_name, identity)
    check_open_tasks(identity, settings, TaskStore.from_settings(settings))
    task_id = new_task_id(task_type)
    options = {**options, "role": identity}
    try:
        row = submit(task_type, options, task_id, settings, cluster_name=cluster_name,
                     table_name=table_name, requested_by=identity)
    except BrokerUnreachableError as exc:
        logger.error("Task %s could not be queued: %s", task_id, exc)
        raise ApiError("The task queue cannot be reached, so nothing was started; check that "
                       "the ACE broker (Redis) is running, then try again.", 503) from exc
    except TaskError as exc:  # queued, but the task store is away: its worker records it
        logger.error("Task %s was queued but not recorded: %s", task_id, exc)
        raise ApiError(str(exc), 503) from exc
    return {"task_id": task_id,
            "submitted_at": iso_millis(datetime.fromisoformat(row["submitted_at"]))}


def submit_diff(params: dict[str, Any], identity: str, settings: Settings) -> dict[str, str]:
    """Queue a table-diff after checking its options, cluster, database and nodes."""
    request = validate_diff_request({**params, "role": identity}, settings)
    cluster = load_cluster(settings.cluster_dir, request.cluster_name)
    cluster.database(request.dbname)
    cluster.select_nodes(request.nodes)
    if request.table_filter:  # refused now (400) rather than by the task once queued
        require_served_role(request.cluster_name, identity)  # before any session as the caller
        check_filter_before_queueing(request, settings)
    return _enqueue("table-diff", _options(request), identity, settings,
                    cluster_name=request.cluster_name, table_name=request.table.display)


def _submit_from_diff_file(task_type: str, validate: Any, params: dict[str, Any],
                           identity: str, settings: Settings) -> dict[str, str]:
    """Queue a repair or rerun of a diff file confined to the output directory."""
    load_cluster(settings.cluster_dir, str(params.get("cluster_name", "")))
    require_served_role(str(params["cluster_name"]), identity)  # before any file is looked at
    if not params.get("diff_file"):  # (a repair by resolved plan is the CLI's alone)
        raise ApiError("diff_file is required: the path of a diff file from table-diff, or "
                       "the task id of a completed table-diff.", 400)
    policy = AccessPolicy.from_settings(settings)
    diff_file = resolve_diff_file(params["diff_file"], settings,
                                  TaskStore.from_settings(settings),
                                  lambda requested_by: policy.may_see(identity, requested_by))
    request = validate({**params, "diff_file": diff_file, "role": identity}, settings)
    options = _options(request)
    given = str(params["diff_file"]).strip()
    if active_store() is not None and is_task_id(given):
        options["diff_file"] = given  # each worker fetches its own copy from the shared store
    return _enqueue(task_type, options, identity, settings,
                    cluster_name=request.cluster_name, table_name=request.table.display)


def preview_repair_plan(params: dict[str, Any], identity: str,
                        settings: Settings) -> dict[str, Any]:
    """A repair plan resolved over a diff file of the output directory, returned at once.

    It reads the diff file only (no node), as the caller may: the same checks as a
    repair's (the caller's role is served on the cluster, the file is the caller's to see).
    """

    load_cluster(settings.cluster_dir, str(params.get("cluster_name", "")))
    require_served_role(str(params["cluster_name"]), identity)
    policy = AccessPolicy.from_settings(settings)
    diff_file = resolve_diff_file(params["diff_file"], settings,
                                  TaskStore.from_settings(settings),
                                  lambda requested_by: policy.may_see(identity, requested_by))
    answer = preview_plan({**params, "diff_file": diff_file, "role": identity}, settings)
    for name in ("diff_file", "resolved_plan"):  # a remote caller sees no server paths
        path = Path(answer[name])
        if path.is_relative_to(settings.output_dir):
            answer[name] = str(path.relative_to(settings.output_dir))
    return answer


def submit_repair(params: dict[str, Any], identity: str, settings: Settings) -> dict[str, str]:
    """Queue a table-repair of a diff file from the output directory."""

    return _submit_from_diff_file("table-repair", validate_repair_request, params, identity,
                                  settings)


def submit_rerun(params: dict[str, Any], identity: str, settings: Settings) -> dict[str, str]:
    """Queue a table-rerun of a diff file from the output directory."""

    return _submit_from_diff_file("table-rerun", validate_rerun_request, params, identity,
                                  settings)
