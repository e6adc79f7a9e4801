"""The task store: one row per ACE task, shared by every front door and worker.

It is the answer to "what happened to my task": the API's task-status, the
CLI's progress bar on a fleet and the operators' history all read it, and only
tasks write it. SQLite (a file in the output directory) serves one host; any
SQLAlchemy URL (PostgreSQL for a fleet) via ``ACE_DATABASE_URL``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ace_shared.config import Settings
from ace_shared.tasks.engine import engine_url, open_engine
from ace_shared.tasks.status import COMPLETED, FAILED, FINISHED, PENDING, RUNNING, STATUSES

__all__ = ["COMPLETED", "FAILED", "FINISHED", "PENDING", "RUNNING", "STATUSES", "TaskRecord",
           "TaskStore", "default_database_url", "engine_url", "record_submission",
           "submission_digest"]

metadata = MetaData()
tasks = Table(
    "ace_tasks", metadata,
    Column("task_id", String(64), primary_key=True),
    Column("task_type", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("cluster_name", String(128)),
    Column("table_name", Text),
    Column("requested_by", String(128)),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("time_taken", Float),
    Column("progress_done", Integer, nullable=False, default=0),
    Column("progress_total", Integer),
    Column("options", Text),
    Column("result", Text),
    Column("error", Text),
    # what was submitted under this id (submission_digest): workers run nothing else
    Column("submission_digest", String(64)),
)


# Built once: task-status polling runs these hundreds of times a second.
_GET_ROW = select(tasks).where(tasks.c.task_id == bindparam("task_id"))
_GET_STATUS = select(*(c for c in tasks.c if c.name != "options")).where(
    tasks.c.task_id == bindparam("task_id"))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat().replace("+00:00", "Z")


@dataclass
class TaskRecord:
    task_id: str
    task_type: str
    status: str
    cluster_name: str | None
    table_name: str | None
    requested_by: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    time_taken: float | None
    progress_done: int
    progress_total: int | None
    options: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    submission_digest: str | None = None

    def status_document(self) -> dict[str, Any]:
        """The task-status answer, under both documented field names."""
        doc: dict[str, Any] = {
            "task_id": self.task_id,
            "task_type": self.task_type,
            "status": self.status,
            "task_status": self.status,
            "cluster_name": self.cluster_name,
            "table_name": self.table_name,
            "requested_by": self.requested_by,
            "submitted_at": _iso(self.submitted_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "time_taken": self.time_taken,
            "progress": {
                "done": self.progress_done,
                "total": self.progress_total,
                "percent": round(100.0 * self.progress_done / self.progress_total, 1)
                if self.progress_total else None,
            },
            "result": self.result,
            "task_context": self.result,
        }
        if self.error:
            doc["error"] = self.error
        return doc


def default_database_url(settings: Settings) -> str:
    if settings.DATABASE_URL:
        return settings.DATABASE_URL
    path = Path(settings.output_dir) / "ace_tasks.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class TaskListener(Protocol):
    """Told of each change the store records, to pass it on (the fleet publishes in Redis)."""

    def running(self, task_id: str) -> None: ...

    def progress(self, task_id: str, *, done: int | None = None, added: int | None = None,
                 total: int | None = None) -> None: ...

    def finished(self, task_id: str, status: str, result: dict[str, Any] | None,
                 error: str | None) -> None: ...


KeepFiles = Callable[[str, dict[str, Any]], None]


class TaskResult(Protocol):
    """A task's outcome as a value (a diff's :class:`~ace_shared.diff.summary.DiffTaskResult`);
    the store keeps what :meth:`to_dict` answers, and :meth:`TaskStore.get` reads that back."""

    def to_dict(self) -> dict[str, Any]: ...


class TaskStore:
    """Reads and writes task rows; every write is one short transaction."""

    _engines: dict[str, Engine] = {}

    def __init__(self, url: str, listener: TaskListener | None = None,
                 keep_files: KeepFiles | None = None) -> None:
        """``listener`` hears of each change after it is recorded (of the first outcome only).

        The store stays the one record of tasks; the listener only lets whoever
        follows a task from elsewhere hear of it at once. ``keep_files`` is called
        with a task's id and result before it is marked COMPLETED (a fleet puts the
        files the result names where every host can fetch them).
        """
        self._listener = listener
        self._keep_files = keep_files
        engine = self._engines.get(url)
        if engine is None:
            engine = open_engine(url, metadata)
            self._engines[url] = engine
        self.engine = engine

    @classmethod
    def from_settings(cls, settings: Settings, listener: TaskListener | None = None,
                      keep_files: KeepFiles | None = None) -> TaskStore:
        return cls(default_database_url(settings), listener, keep_files)

    def create(self, task_id: str, task_type: str, *, cluster_name: str | None,
               table_name: str | None, requested_by: str | None,
               options: dict[str, Any] | None = None, submitted_at: datetime | None = None,
               if_absent: bool = False, digest: str | None = None) -> bool:
        """Insert the task's PENDING row; False if ``if_absent`` and the row is there already.

        With ``if_absent`` two writers holding the same submission (the submitter
        and the worker that took its message) may both call this, in either order:
        the first inserts, the second changes nothing.
        """
        row = {"task_id": task_id, "task_type": task_type, "status": PENDING,
               "cluster_name": cluster_name, "table_name": table_name,
               "requested_by": requested_by, "submitted_at": submitted_at or _now(),
               "progress_done": 0, "options": json.dumps(options or {}, default=str),
               "submission_digest": digest}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(tasks).values(**row))
        except IntegrityError:
            if not if_absent:
                raise
            return False
        return True

    def mark_running(self, task_id: str, progress_total: int | None = None) -> bool:
        """Mark a PENDING (or restarted RUNNING) task RUNNING; False once it has finished."""
        values: dict[str, Any] = {"status": RUNNING, "started_at": _now()}
        if progress_total is not None:
            values["progress_total"] = progress_total
        with self.engine.begin() as conn:
            result = conn.execute(update(tasks).where(tasks.c.task_id == task_id)
                                  .where(tasks.c.status.in_((PENDING, RUNNING))).values(**values))
        if result.rowcount and self._listener is not None:
            self._listener.running(task_id)
            if progress_total is not None:
                self._listener.progress(task_id, total=progress_total)
        return bool(result.rowcount)

    def set_total(self, task_id: str, total: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.task_id == task_id)
                         .values(progress_total=total, progress_done=0))
        if self._listener is not None:
            self._listener.progress(task_id, total=total)

    def add_progress(self, task_id: str, done: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.task_id == task_id)
                         .where(tasks.c.status == RUNNING)
                         .values(progress_done=tasks.c.progress_done + done))
        if self._listener is not None:
            self._listener.progress(task_id, added=done)

    def set_progress(self, task_id: str, done: int, total: int | None = None) -> None:
        values: dict[str, Any] = {"progress_done": done}
        if total is not None:
            values["progress_total"] = total
        with self.engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.task_id == task_id)
                         .where(tasks.c.status == RUNNING).values(**values))
        if self._listener is not None:
            self._listener.progress(task_id, done=done, total=total)

    def _finish(self, task_id: str, status: str, result: dict[str, Any] | None,
                error: str | None) -> bool:
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(select(tasks.c.started_at, tasks.c.submitted_at, tasks.c.status)
                               .where(tasks.c.task_id == task_id)).first()
            if row is None or row.status in (COMPLETED, FAILED):
                return False
            start = row.started_at or row.submitted_at
            if start.tzinfo is None:
                start = start.replace(tzinfo=timezone.utc)
            conn.execute(update(tasks).where(tasks.c.task_id == task_id).values(
                status=status, finished_at=now, started_at=start,
                time_taken=round((now - start).total_seconds(), 3),
                result=json.dumps(result, default=str) if result is not None else None,
                error=error,
            ))
        if self._listener is not None:
            self._listener.finished(task_id, status, result, error)
        return True

    def complete(self, task_id: str, result: TaskResult | dict[str, Any]) -> bool:
        """Mark the task COMPLETED; False if it had already finished (first outcome wins).

        ``result`` is a typed result, or the plain mapping of a task whose result has none."""
        if not isinstance(result, dict):
            result = result.to_dict()
        if self._keep_files is not None:
            self._keep_files(task_id, result)
        return self._finish(task_id, COMPLETED, result, None)

    def fail(self, task_id: str, error: str) -> bool:
        """Mark the task FAILED; False if it had already finished (first outcome wins)."""
        return self._finish(task_id, FAILED, None, error)

    def get(self, task_id: str, with_options: bool = True) -> TaskRecord | None:
        """The task's row by primary key; ``with_options=False`` skips the options column
        (task-status polling never shows it, and a request's options can be long)."""
        query = _GET_ROW if with_options else _GET_STATUS
        with self.engine.connect() as conn:
            row = conn.execute(query, {"task_id": task_id}).mappings().first()
        if row is None:
            return None
        return TaskRecord(
            task_id=row["task_id"], task_type=row["task_type"], status=row["status"],
            cluster_name=row["cluster_name"], table_name=row["table_name"],
            requested_by=row["requested_by"], submitted_at=row["submitted_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            time_taken=row["time_taken"], progress_done=row["progress_done"] or 0,
            progress_total=row["progress_total"],
            options=json.loads(row.get("options") or "{}"),
            result=json.loads(row["result"]) if row["result"] else None,
            error=row["error"], submission_digest=row["submission_digest"],
        )

    def unfinished(self, limit: int = 1000) -> list[str]:
        """Ids of tasks not finished yet, oldest first."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(
                select(tasks.c.task_id).where(tasks.c.status.in_((PENDING, RUNNING)))
                .order_by(tasks.c.submitted_at).limit(limit))]

    def open_counts(self, requested_by: str, since: datetime) -> dict[str, int]:
        """How many tasks ``requested_by`` submitted after ``since`` are PENDING and RUNNING
        (the API's per-caller limits)."""
        query = (select(tasks.c.status, func.count())
                 .where(tasks.c.requested_by == requested_by,
                        tasks.c.status.in_((PENDING, RUNNING)),
                        tasks.c.submitted_at >= since)
                 .group_by(tasks.c.status))
        with self.engine.connect() as conn:
            return {str(status): int(count) for status, count in conn.execute(query)}

    def writers_of(self, diff_file: str) -> list[str | None]:
        """Who requested the completed tasks whose result names ``diff_file``.

        Used when a repair or rerun names a diff file by path: the caller may use
        it only if one of these is the caller. Rare (one per such submission), so a
        text search of the result column is enough; each hit is checked exactly.
        """
        needle = json.dumps(diff_file)
        with self.engine.connect() as conn:
            rows = conn.execute(select(tasks.c.requested_by, tasks.c.result)
                                .where(tasks.c.status == COMPLETED)
                                .where(tasks.c.result.contains(needle, autoescape=True))).all()
        return [row.requested_by for row in rows
                if (json.loads(row.result) or {}).get("diff_file") == diff_file]

    def counts(self) -> dict[tuple[str, str], int]:
        """How many tasks of each (type, status) the store holds, for the metrics."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(tasks.c.task_type, tasks.c.status, func.count())
                                .group_by(tasks.c.task_type, tasks.c.status)).all()
        return {(str(t), str(s)): int(n) for t, s, n in rows}

    def recent(self, limit: int = 50) -> list[TaskRecord]:
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(
                select(tasks.c.task_id).order_by(tasks.c.submitted_at.desc()).limit(limit))]
        return [rec for rec in (self.get(i) for i in ids) if rec is not None]


def _forget_engines() -> None:
    """In a forked child: never use the parent's pooled connections (Celery forks its pool)."""
    for engine in TaskStore._engines.values():
        engine.dispose(close=False)
    TaskStore._engines.clear()


os.register_at_fork(after_in_child=_forget_engines)


def record_submission(store: TaskStore, task_id: str, options: dict[str, Any],
                      submission: dict[str, Any]) -> bool:
    """Record a submitted task's PENDING row unless it is there; True if this call did.

    ``submission`` is what travels in the task's message (see
    ``ace_workers.client.submission``): the submitter and the worker both call
    this with the same one, so the row is the same whoever writes it.
    """
    return store.create(
        task_id, submission["task_type"], cluster_name=submission.get("cluster_name"),
        table_name=submission.get("table_name"), requested_by=submission.get("requested_by"),
        options=options, submitted_at=datetime.fromisoformat(submission["submitted_at"]),
        if_absent=True, digest=submission_digest(task_id, options, submission))


def submission_digest(task_id: str, options: dict[str, Any],
                      submission: dict[str, Any]) -> str:
    """A digest of everything submitted under ``task_id``, the same on both ends.

    The submitter digests the objects it sends and the worker what it received, so
    both go through one JSON round trip first (tuples become lists, keys strings)."""
    plain = json.loads(json.dumps([task_id, options, submission], default=str))
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
