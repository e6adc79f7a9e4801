"""The work folder of a task: ``$OUTPUT_DIR/work/<task_id>/``, and what is in it.

This module is the only one that knows the folder's layout and the formats of
its files; every other module asks it. The folder lives in the shared output
directory, so whichever worker runs a step (a thread here, a Celery subtask on
another host) finds what the earlier steps left:

- ``plan.json``: a diff's plan (spec, batches of ranges, what the merge needs);
- ``mtree_build.json``: an mtree build's plan (spec, batches of leaf ranges);
- ``rerun_plan.json`` and ``keys_<n>.json``: a rerun's plan and its key batches;
- ``checks.json``: a schema-diff's or repset-diff's per-table diffs, for its collector;
- ``part_<first>.jsonl``: one batch's differing rows, a :class:`DiffRecord` a line;
- ``part_<first>.done.json``: that batch's :class:`BatchResult`, written last,
  so a reducer knows the partial file is whole;
- ``spool-<n>/``: the merge's per-pair spools (see :mod:`ace_shared.diff.partials`);
- ``ace-spool-*/``: a rerun's key spool while it plans
  (:class:`ace_shared.difffile.spool.RowSpool`).

A repair, which has no work folder of its own, spools its diff file under the
work root (:meth:`WorkDir.root`).

Files are written under a temporary name and renamed, so a step redelivered
after its worker died simply rewrites them, and a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ace_shared.difffile.format import Key, Row
from ace_shared.errors import ConfigError

WORK = "work"
DIFF_PLAN = "plan.json"
RERUN_PLAN = "rerun_plan.json"
CHECKS_STATE = "checks.json"
BUILD_PLAN = "mtree_build.json"


@dataclass
class DiffRecord:
    """One key whose row is not the same on every node; ``None`` where a node lacks it."""

    key: Key
    rows: dict[str, Row | None]

    def to_json(self) -> str:
        return json.dumps({"key": list(self.key), "rows": self.rows}, ensure_ascii=False,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> DiffRecord:
        d = json.loads(line)
        return cls(tuple(d["key"]), d["rows"])


@dataclass
class BatchResult:
    """What a batch reports back: small, so it can travel through any result backend."""

    first_range: int
    ranges_done: int
    ranges_total: int
    rows_checked: int
    diff_keys: int
    partial_path: str
    stopped_early: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchResult:
        return cls(**d)


def _temp_name(path: Path) -> Path:
    """A name no other process writing the same file uses (hosts share the folder)."""
    return path.with_name(path.name + f".{socket.gethostname()}.{os.getpid()}.tmp")


def _write_atomically(path: Path, text: str) -> None:
    tmp = _temp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class PartialWriter:
    """Appends the records of one batch to its partial file; counts them."""

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh
        self.count = 0

    def write(self, records: Iterable[DiffRecord]) -> None:
        for rec in records:
            self._fh.write(rec.to_json())
            self._fh.write("\n")
            self.count += 1


def read_partial(path: str | Path) -> Iterator[DiffRecord]:
    """The records of one partial file, in the order they were written (key order)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield DiffRecord.from_json(line)


def spool_folder(partials: list[str | Path], owner: int) -> Path | None:
    """A fresh folder beside the partial files for one reader's spools (None: no partials)."""
    if not partials:
        return None
    folder = Path(partials[0]).parent / f"spool-{owner:x}"
    folder.mkdir(exist_ok=True)
    return folder


class WorkDir:
    """One task's work folder; every path and file format in it is decided here."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @staticmethod
    def root(output_dir: str | Path) -> Path:
        """``$OUTPUT_DIR/work``: where every task's work folder is."""
        return Path(output_dir) / WORK

    @classmethod
    def for_task(cls, output_dir: str | Path, task_id: str) -> WorkDir:
        return cls(cls.root(output_dir) / task_id)

    def __str__(self) -> str:
        return str(self.path)

    def create(self) -> WorkDir:
        """Make the folder; a plain message if the output folder cannot be written to."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"The output folder {self.path.parent.parent} cannot be written to "
                f"({exc.strerror or exc}); set ACE_OUTPUT_DIR to a folder ACE may write in."
            ) from exc
        return self

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- batches: partial files and their results ---------------------------------------

    def partial_path(self, first: int) -> Path:
        return self.path / f"part_{first:09d}.jsonl"

    def batch_result_path(self, first: int) -> Path:
        return self.path / f"part_{first:09d}.done.json"

    @contextmanager
    def partial_writer(self, first: int) -> Iterator[PartialWriter]:
        """Write batch ``first``'s partial file; it gets its name only when the batch ends."""
        final = self.partial_path(first)
        tmp = _temp_name(final)
        with open(tmp, "w", encoding="utf-8") as fh:
            yield PartialWriter(fh)
        os.replace(tmp, final)

    def write_batch_result(self, result: BatchResult) -> None:
        """Record a finished batch beside its partial file, so a reducer can find every part."""
        _write_atomically(self.batch_result_path(result.first_range), json.dumps(result.to_dict()))

    def read_batch_result(self, first: int) -> BatchResult | None:
        path = self.batch_result_path(first)
        if not path.is_file():
            return None
        return BatchResult.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def read_batch_results(self, firsts: Iterable[int]) -> list[BatchResult] | None:
        """Every batch's own record, or None while any is missing (a redelivery still runs)."""
        found = [self.read_batch_result(first) for first in firsts]
        if any(r is None for r in found):
            return None
        return [r for r in found if r is not None]

    # -- plans ----------------------------------------------------------------------------

    def _read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def has_diff_plan(self) -> bool:
        return (self.path / DIFF_PLAN).is_file()

    def write_diff_plan(self, plan: dict[str, Any]) -> None:
        _write_atomically(self.path / DIFF_PLAN, json.dumps(plan))

    def read_diff_plan(self) -> dict[str, Any]:
        return dict(self._read_json(DIFF_PLAN))

    def has_build_plan(self) -> bool:
        return (self.path / BUILD_PLAN).is_file()

    def write_build_plan(self, plan: dict[str, Any]) -> None:
        _write_atomically(self.path / BUILD_PLAN, json.dumps(plan))

    def read_build_plan(self) -> dict[str, Any]:
        return dict(self._read_json(BUILD_PLAN))

    def write_rerun_plan(self, plan: dict[str, Any]) -> None:
        _write_atomically(self.path / RERUN_PLAN, json.dumps(plan))

    def read_rerun_plan(self) -> dict[str, Any]:
        return dict(self._read_json(RERUN_PLAN))

    def write_checks_state(self, state: dict[str, Any]) -> Path:
        """Save a fan-out's state (its child tasks) for its collector; the file's path."""
        path = self.create().path / CHECKS_STATE
        _write_atomically(path, json.dumps(state))
        return path

    # -- a rerun's key batches ------------------------------------------------------------

    def keys_path(self, index: int) -> Path:
        return self.path / f"keys_{index:09d}.json"

    def write_keys(self, index: int, keys: list[Key]) -> None:
        self.keys_path(index).write_text(json.dumps([list(k) for k in keys], ensure_ascii=False),
                                         encoding="utf-8")

    def read_keys(self, index: int) -> list[Key]:
        return [tuple(k) for k in json.loads(self.keys_path(index).read_text(encoding="utf-8"))]
