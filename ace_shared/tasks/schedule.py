"""Scheduled table-diffs and auto-repair timing, read from ``ace_config.py``.

Pure functions: they check the ``schedule_jobs``/``schedule_config`` lists
and ``auto_repair_config`` and return plain descriptions that Celery beat
(``ace_workers.schedule``) turns into its own schedule. A schedule with both
``crontab_schedule`` and ``run_frequency`` runs on the crontab (the specific
times win over the interval); a disabled schedule is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ace_shared.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FREQ_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_frequency(text: str, what: str) -> int:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1w"`` to seconds."""
    match = _FREQ_RE.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"{what} must look like 30s, 5m, 1h or 1w; got {text!r}.")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_crontab(text: str, what: str) -> tuple[str, str, str, str, str]:
    """A five-field cron expression: minute hour day_of_month month day_of_week."""
    fields = str(text).split()
    if len(fields) != 5 or not all(re.fullmatch(r"[\d*/,\-A-Za-z]+", f) for f in fields):
        raise ConfigError(f"{what} must be a five-field cron expression such as "
                          f"'0 */4 * * *'; got {text!r}.")
    return fields[0], fields[1], fields[2], fields[3], fields[4]


@dataclass(frozen=True)
class ScheduledDiff:
    """One enabled schedule: which diff to run, and when.

    ``rerun_after``: when the diff finds differences, check them again after
    this many seconds, so divergence that heals within the replication lag is
    told apart from divergence that persists.
    """

    name: str
    options: dict[str, Any] = field(hash=False)
    crontab: tuple[str, str, str, str, str] | None = None
    every_seconds: int | None = None
    command: str = "table-diff"
    rerun_after: int | None = None


# the commands a schedule may run, and the option each one needs besides the cluster
SCHEDULED_COMMANDS = {"table-diff": "table_name", "repset-diff": "repset_name",
                      "mtree-table-diff": "table_name"}


# a repair plan's options: never taken from a schedule's args
PLAN_ARGS = frozenset({"repair_plan", "apply_plan", "plan_out", "allow_stale"})


def _job_target(name: str, job: dict[str, Any]) -> tuple[str, str]:
    command = job.get("command") or "table-diff"
    if command not in SCHEDULED_COMMANDS:
        raise ConfigError(f"Scheduled job {name} has command {command!r}; use "
                          f"{' or '.join(SCHEDULED_COMMANDS)}.")
    return command, SCHEDULED_COMMANDS[command]


def scheduled_diffs(jobs: tuple[dict[str, Any], ...], schedules: tuple[dict[str, Any], ...],
                    min_frequency: str) -> list[ScheduledDiff]:
    """Check the job and schedule lists; return the enabled schedules."""
    floor = parse_frequency(min_frequency, "MIN_RUN_FREQUENCY")
    by_name: dict[str, dict[str, Any]] = {}
    for job in jobs:
        name = job.get("name")
        if not name:
            raise ConfigError("Every entry of schedule_jobs needs a name.")
        if name in by_name:
            raise ConfigError(f"schedule_jobs has two jobs named {name}.")
        for required in ("cluster_name", _job_target(name, job)[1]):
            if not job.get(required):
                raise ConfigError(f"Scheduled job {name} needs {required}.")
        planned = sorted(set(job.get("args") or {}) & PLAN_ARGS)
        if planned:
            # a diff would ignore it, and no scheduled command repairs: refused, not dropped
            raise ConfigError(f"Scheduled job {name} names {planned[0]} in its args, but "
                              "scheduled jobs run diffs, which take no repair plan; remove it "
                              "and repair with ace table-repair --repair-plan.")
        by_name[name] = job
    out = []
    for entry in schedules:
        job_name = entry.get("job_name")
        if job_name not in by_name:
            raise ConfigError(f"schedule_config names job {job_name!r}, which is not in "
                              "schedule_jobs.")
        if not entry.get("enabled", False):
            continue
        job = by_name[job_name]
        command, target = _job_target(job_name, job)
        options = {**(job.get("args") or {}), "cluster_name": job["cluster_name"],
                   target: job[target]}
        rerun = entry.get("rerun_after")
        extra: dict[str, Any] = {"command": command, "rerun_after": parse_frequency(
            rerun, f"rerun_after of {job_name}") if rerun else None}
        if entry.get("crontab_schedule"):
            cron = parse_crontab(entry["crontab_schedule"], f"crontab_schedule of {job_name}")
            out.append(ScheduledDiff(job_name, options, crontab=cron, **extra))
        elif entry.get("run_frequency"):
            seconds = parse_frequency(entry["run_frequency"], f"run_frequency of {job_name}")
            if seconds < floor:
                raise ConfigError(f"run_frequency of {job_name} ({entry['run_frequency']}) is "
                                  f"below MIN_RUN_FREQUENCY ({min_frequency}); raise it or "
                                  "lower MIN_RUN_FREQUENCY in ace_config.py.")
            out.append(ScheduledDiff(job_name, options, every_seconds=seconds, **extra))
        else:
            raise ConfigError(f"Schedule of {job_name} needs crontab_schedule or run_frequency.")
    return out


@dataclass(frozen=True)
class AutoRepairTiming:
    cluster_name: str
    dbname: str | None
    poll_seconds: int
    repair_seconds: int


def auto_repair_timing(config: dict[str, Any], min_frequency: str) -> AutoRepairTiming | None:
    """The auto-repair polls to schedule, or ``None`` when auto-repair is off."""
    if not config or not config.get("enabled", False):
        return None
    if not config.get("cluster_name"):
        raise ConfigError("auto_repair_config needs cluster_name when enabled.")
    floor = parse_frequency(min_frequency, "MIN_RUN_FREQUENCY")
    poll = parse_frequency(config.get("poll_frequency", "10m"), "poll_frequency")
    repair = parse_frequency(config.get("repair_frequency", "15m"), "repair_frequency")
    for name, value in (("poll_frequency", poll), ("repair_frequency", repair)):
        if value < floor:
            raise ConfigError(f"auto_repair_config {name} is below MIN_RUN_FREQUENCY "
                              f"({min_frequency}); raise it or lower MIN_RUN_FREQUENCY.")
    return AutoRepairTiming(config["cluster_name"], config.get("dbname"), poll, repair)
