"""The work folder of a task: ``$OUTPUT_DIR/work/<task_id>/``, and what is in it.

This module is the only one that knows the folder's layout and the formats of
its files; every other module asks it. The folder lives in the shared output
directory, so whichever worker runs a step (a thread here, a Celery subtask on
another host) finds what the earlier steps left:

- ``plan.json``: a diff's plan (spec, batches of ranges, what the merge needs);
- ``mtree_build.json``: an mtree build's plan (spec, batches of leaf ranges);
- ``rerun_plan.json`` and ``keys_<n>.json``: a rerun's plan and its key batches;
- ``checks.json``: a schema-diff's or repset-diff's per-table diffs, for its collector;
- ``part_<first>.jsonl``: one batch's differing rows, a :class:`DiffRecord` a line
  (tab-separated: the key as JSON, then each node's name as JSON and its row
  exactly as the diff file writes it, or ``null``);
- ``part_<first>.done.json``: that batch's :class:`BatchResult`, written last,
  so a reducer knows the partial file is whole;
- ``spool-<n>/``: the merge's per-pair spools (see :mod:`ace_shared.diff.partials`);
- ``ace-spool-*/``: a rerun's key spool while it plans
  (:class:`ace_shared.difffile.spool.RowSpool`).

A repair, which has no work folder of its own, spools its diff file under the
work root (:meth:`WorkDir.root`).

Files are written under a temporary name and renamed, so a step redelivered
after its worker died simply rewrites them, and a reader never sees half a file.

Hosts that share no disk share the folder through the fleet's shared store
(:mod:`ace_shared.tasks.filestore`): each keeps a local copy, every file written
is also put in the store, and one another host wrote is fetched on first read.
Spools stay local: only the process that made them reads them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ace_shared.difffile.format import Key, Row, row_json
from ace_shared.errors import ConfigError
from ace_shared.tasks.filestore import active_store, local_root
from ace_shared.tasks.status import JobFinished

WORK = "work"
FETCHED = "fetched"  # work/fetched/: this host's copies of diff files other hosts wrote
DIFF_PLAN = "plan.json"
RERUN_PLAN = "rerun_plan.json"
CHECKS_STATE = "checks.json"
BUILD_PLAN = "mtree_build.json"
# a job's plans: while the shared store holds one, the job runs (a finished job's is removed)
PLANS = (DIFF_PLAN, RERUN_PLAN, BUILD_PLAN, CHECKS_STATE)


# json.dumps(text, ensure_ascii=False) without the encoder's machinery (the C function)
_encode_text = json.encoder.encode_basestring


@functools.lru_cache(maxsize=256)
def _name_json(node: str) -> str:
    return _encode_text(node)


@dataclass
class DiffRecord:
    """One key whose row is not the same on every node.

    Each node's row is kept as the JSON text the diff file writes for it
    (:func:`~ace_shared.difffile.format.row_json`; ``None`` where the node lacks
    it): that text is built once, where the row is fetched, and from there on only
    copied, compared (two rows are equal exactly when their texts are) and written.
    """

    key: Key
    texts: dict[str, str | None]

    @classmethod
    def from_rows(cls, key: Key, rows: dict[str, Row | None]) -> DiffRecord:
        return cls(key, {n: None if r is None else row_json(r) for n, r in rows.items()})

    @property
    def rows(self) -> dict[str, Row | None]:
        """Each node's row decoded (for reports; the diff file never needs this)."""
        return {n: None if t is None else json.loads(t) for n, t in self.texts.items()}

    def to_line(self) -> str:
        """The record as one line of a partial file (without its line break).

        JSON text holds no tab or line break, so tabs part the fields safely.
        """
        fields = ["[" + ", ".join(map(_encode_text, self.key)) + "]"]  # as json.dumps does
        for node, text in self.texts.items():
            fields.append(_name_json(node))
            fields.append("null" if text is None else text)
        return "\t".join(fields)

    @classmethod
    def from_line(cls, line: str, names: dict[str, str] | None = None) -> DiffRecord:
        """Read :meth:`to_line` back; ``names`` caches the decoded node names."""
        fields = line.rstrip("\n").split("\t")
        names = {} if names is None else names
        texts: dict[str, str | None] = {}
        for i in range(1, len(fields), 2):
            node = names.get(fields[i])
            if node is None:
                node = names[fields[i]] = json.loads(fields[i])
            texts[node] = None if fields[i + 1] == "null" else fields[i + 1]
        return cls(tuple(json.loads(fields[0])), texts)


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
        lines = [rec.to_line() for rec in records]
        if lines:
            self._fh.write("\n".join(lines))
            self._fh.write("\n")
            self.count += len(lines)


def read_partial(path: str | Path) -> Iterator[DiffRecord]:
    """The records of one partial file, in the order they were written (key order)."""
    names: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="\n") as fh:
        for line in fh:
            if line.strip():
                yield DiffRecord.from_line(line, names)


def read_partial_texts(path: str | Path, nodes: list[str]) -> Iterator[list[str]]:
    """Each record's rows of one partial file, in ``nodes`` order, as their texts.

    A node that lacks the row gives ``"null"`` (no row's text is that). Keys are
    not decoded: this is all the merge needs to write the diff file, whose rows
    are split off their lines, compared and copied as they are.
    """
    names = {json.dumps(n, ensure_ascii=False): i for i, n in enumerate(nodes)}
    usual = list(names)  # the node fields of a record that lists every node in order
    with open(path, encoding="utf-8", newline="\n") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if fields[1::2] == usual:
                yield fields[2::2]
            elif len(fields) > 1:
                texts = ["null"] * len(nodes)
                for i in range(1, len(fields), 2):
                    at = names.get(fields[i])
                    if at is not None:
                        texts[at] = fields[i + 1]
                yield texts


def spool_folder(partials: Sequence[str | Path], owner: int) -> Path | None:
    """A fresh folder beside the partial files for one reader's spools (None: no partials)."""
    if not partials:
        return None
    folder = Path(partials[0]).parent / f"spool-{owner:x}"
    folder.mkdir(exist_ok=True)
    return folder


class WorkDir:
    """One task's work folder; every path and file format in it is decided here.

    With a shared store (:mod:`ace_shared.tasks.filestore`, set for the process by
    :func:`~ace_shared.tasks.filestore.use_shared_store`) the folder is a local copy:
    every file written here is also put in the store under ``work/<task_id>/<name>``,
    and a file another host wrote is fetched when first read. A path written by a
    host whose output folder is elsewhere is taken as the same task's folder here.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        root = local_root()
        if active_store() is not None and root is not None:
            here = root / WORK
            if self.path.parent != here:
                self.path = here / self.path.name

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
        store = active_store()
        if store is not None:
            store.remove(f"{WORK}/{self.path.name}/")

    # -- the shared store: put what is written, fetch what another host wrote -------------

    def _shared_name(self, path: Path) -> str:
        return f"{WORK}/{self.path.name}/{path.name}"

    def _local_folder(self) -> None:
        """Another host planned the job: this host's copy of its folder starts here."""
        if active_store() is not None:
            self.path.mkdir(parents=True, exist_ok=True)

    def _planned(self) -> bool:
        """Whether the job still runs, as far as the shared store tells: it holds the
        job's plan. A finished job's files leave the store with its plan, whichever host
        ends it; this host's copy of the folder may outlive them, so it is not asked."""
        store = active_store()
        return store is None or any(store.size(self._shared_name(self.path / name)) is not None
                                    for name in PLANS)

    def _still_wanted(self) -> None:
        """Raise :class:`JobFinished` (this host's copy of the folder removed) once the
        job has finished: a late batch then neither makes the folder again nor puts a
        file of it in the store."""
        if self._planned():
            return
        shutil.rmtree(self.path, ignore_errors=True)
        raise JobFinished(self.path.name)

    def _batch_folder(self) -> None:
        """Where a batch is about to write: the folder, if its job still runs; without a
        shared store the folder its job made, which the job's end removes."""
        if active_store() is None:
            if not self.path.is_dir():
                raise JobFinished(self.path.name)
            return
        self._still_wanted()
        self._local_folder()

    def _share_batch_file(self, path: Path) -> None:
        """Put a batch's file in the store, then take it out again if the job finished
        meanwhile (its folder was removed from the store before the file arrived)."""
        store = active_store()
        if store is None:
            return
        store.put(self._shared_name(path), path)
        if not self._planned():
            store.remove(self._shared_name(path))
            self._still_wanted()

    def _write_batch_file(self, path: Path, text: str) -> None:
        self._batch_folder()
        try:
            _write_atomically(path, text)
        except FileNotFoundError:  # the folder was removed under it: the job finished
            raise JobFinished(self.path.name) from None
        self._share_batch_file(path)

    def _share(self, path: Path) -> None:
        store = active_store()
        if store is not None:
            store.put(self._shared_name(path), path)

    def _write(self, path: Path, text: str) -> None:
        self._local_folder()
        _write_atomically(path, text)
        self._share(path)

    def _here(self, path: Path) -> bool:
        """Whether ``path`` is in this host's copy, fetched from the store if need be."""
        if path.is_file():
            return True
        store = active_store()
        return store is not None and store.get(self._shared_name(path), path)

    def _in_store(self, path: Path) -> bool:
        store = active_store()
        return store is not None and store.size(self._shared_name(path)) is not None

    # -- batches: partial files and their results ---------------------------------------

    def partial_path(self, first: int) -> Path:
        return self.path / f"part_{first:09d}.jsonl"

    def batch_result_path(self, first: int) -> Path:
        return self.path / f"part_{first:09d}.done.json"

    @contextmanager
    def partial_writer(self, first: int) -> Iterator[PartialWriter]:
        """Write batch ``first``'s partial file; it gets its name only when the batch ends.

        Raises :class:`JobFinished`, writing nothing, if the job has finished: before the
        batch starts, or when its file would be named or shared."""
        self._batch_folder()
        final = self.partial_path(first)
        tmp = _temp_name(final)
        try:
            fh = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except FileNotFoundError:  # the folder was removed: the job finished
            raise JobFinished(self.path.name) from None
        try:
            with fh:
                yield PartialWriter(fh)
            os.replace(tmp, final)
        except FileNotFoundError:  # the folder was removed under it: the job finished
            raise JobFinished(self.path.name) from None
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._share_batch_file(final)

    def write_batch_result(self, result: BatchResult) -> None:
        """Record a finished batch beside its partial file, so a reducer can find every part
        (:class:`JobFinished` if the job has finished meanwhile)."""
        self._write_batch_file(self.batch_result_path(result.first_range),
                               json.dumps(result.to_dict()))

    def mark_batch_done(self, first: int, rows: int) -> bool:
        """Record that batch ``first`` of a chord without partial files (a tree build's
        hashing) is done, for the merge watch; False if the folder is gone (the job
        finished while a late copy of the batch ran)."""
        try:
            self._write_batch_file(self.batch_result_path(first), json.dumps({"rows": rows}))
        except JobFinished:
            return False
        return True

    def read_batch_result(self, first: int) -> BatchResult | None:
        path = self.batch_result_path(first)
        if not self._here(path):
            return None
        result = BatchResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        if active_store() is not None:  # the partial file as this host has it
            partial = self.partial_path(first)
            self._here(partial)
            result.partial_path = str(partial)
        return result

    def read_batch_results(self, firsts: Iterable[int]) -> list[BatchResult] | None:
        """Every batch's own record, or None while any is missing (a redelivery still runs)."""
        found = []
        for first in firsts:
            result = self.read_batch_result(first)
            if result is None:
                return None
            found.append(result)
        return found

    def batches_recorded_at(self, firsts: Iterable[int]) -> float | None:
        """When the last of these batches recorded its result (the newest record's time),
        or None while any record is missing. Only looks at the files, never reads them."""
        store = active_store()
        newest = 0.0
        for first in firsts:
            path = self.batch_result_path(first)
            try:
                newest = max(newest, path.stat().st_mtime)
                continue
            except OSError:
                stamp = store.modified(self._shared_name(path)) if store is not None else None
            if stamp is None:
                return None
            newest = max(newest, stamp)
        return newest

    # -- plans ----------------------------------------------------------------------------

    def _read_json(self, name: str) -> Any:
        path = self.path / name
        self._here(path)
        return json.loads(path.read_text(encoding="utf-8"))

    def _has(self, name: str) -> bool:
        path = self.path / name
        return path.is_file() or self._in_store(path)

    def has_diff_plan(self) -> bool:
        return self._has(DIFF_PLAN)

    def write_diff_plan(self, plan: dict[str, Any]) -> None:
        self._write(self.path / DIFF_PLAN, json.dumps(plan))

    def read_diff_plan(self) -> dict[str, Any]:
        return dict(self._read_json(DIFF_PLAN))

    def has_build_plan(self) -> bool:
        return self._has(BUILD_PLAN)

    def write_build_plan(self, plan: dict[str, Any]) -> None:
        self._write(self.path / BUILD_PLAN, json.dumps(plan))

    def read_build_plan(self) -> dict[str, Any]:
        return dict(self._read_json(BUILD_PLAN))

    def has_rerun_plan(self) -> bool:
        return self._has(RERUN_PLAN)

    def write_rerun_plan(self, plan: dict[str, Any]) -> None:
        self._write(self.path / RERUN_PLAN, json.dumps(plan))

    def read_rerun_plan(self) -> dict[str, Any]:
        return dict(self._read_json(RERUN_PLAN))

    def write_checks_state(self, state: dict[str, Any]) -> Path:
        """Save a fan-out's state (its child tasks) for its collector; the file's path."""
        path = self.create().path / CHECKS_STATE
        self._write(path, json.dumps(state))
        return path

    def read_checks_state(self) -> dict[str, Any]:
        return dict(self._read_json(CHECKS_STATE))

    # -- a rerun's key batches ------------------------------------------------------------

    def keys_path(self, index: int) -> Path:
        return self.path / f"keys_{index:09d}.json"

    def write_keys(self, index: int, keys: list[Key]) -> None:
        self._write(self.keys_path(index), json.dumps([list(k) for k in keys],
                                                      ensure_ascii=False))

    def read_keys(self, index: int) -> list[Key]:
        path = self.keys_path(index)
        self._here(path)
        return [tuple(k) for k in json.loads(path.read_text(encoding="utf-8"))]
