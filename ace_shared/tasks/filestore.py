"""The fleet's shared file store: named files every host reaches over the network.

A fleet whose hosts share no disk still shares its task store (PostgreSQL) and
may have an S3-compatible bucket. Each host keeps its own output folder; what
the fleet's steps hand to each other (a job's plan, a batch's partial file and
record, a rerun's key batches) and what a task leaves for its caller (diff
files, reports, check results) is also put here under a name, and fetched by
whichever host needs it. Files travel in chunks, so memory stays flat whatever
their size.

Two backends:

- :class:`~ace_shared.tasks.dbfiles.DatabaseFileStore`: two tables beside the task table, a header row per
  file and its bytes in rows of :data:`CHUNK_BYTES`. A new version is written
  whole under a fresh generation and made visible in the transaction that
  writes its header, so a reader sees the old file or the new, never half.
- :class:`ObjectFileStore`: an S3-compatible bucket through fsspec (s3fs);
  objects appear whole when their upload completes.

``SHARED_STORE`` chooses: ``local`` (nothing shared: the output folder is on one
host or on a shared volume), ``database``, ``s3://bucket/prefix``, or empty for
the default: ``database`` when ``ACE_DATABASE_URL`` is PostgreSQL, else ``local``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ace_shared.config import Settings
from ace_shared.errors import ConfigError

CHUNK_BYTES = 1 << 20

class FileStore(Protocol):
    """What the work folder and the result readers need of a shared store."""

    def put(self, name: str, source: Path) -> None:
        """Store the local file ``source`` as ``name`` (replacing any), streamed."""

    def get(self, name: str, target: Path) -> bool:
        """Write ``name`` to the local file ``target`` (whole or not at all); False if absent."""

    def read(self, name: str) -> Iterator[bytes] | None:
        """``name``'s bytes a chunk at a time; None if absent."""

    def size(self, name: str) -> int | None:
        """``name``'s size in bytes; None if absent."""

    def modified(self, name: str) -> float | None:
        """When ``name`` was stored (seconds since the epoch); None if absent."""

    def remove(self, prefix: str) -> int:
        """Remove every file whose name starts with ``prefix``; how many."""

    def older_than(self, prefix: str, cutoff: datetime) -> list[str]:
        """Names under ``prefix`` stored before ``cutoff``."""


def chunks_of(source: Path) -> Iterator[bytes]:
    with open(source, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


def write_whole(target: Path, parts: Iterator[bytes]) -> None:
    """Write ``parts`` to ``target`` under a temporary name, then rename (0600)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            for part in parts:
                fh.write(part)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class StreamedStore:
    """What every store that streams its files by :meth:`read` gets from it: :meth:`get`."""

    def read(self, name: str) -> Iterator[bytes] | None:
        raise NotImplementedError

    def get(self, name: str, target: Path) -> bool:
        parts = self.read(name)
        if parts is None:
            return False
        write_whole(target, parts)
        return True


class ObjectFileStore(StreamedStore):
    """Files in an S3-compatible bucket (``s3://bucket/prefix``), through fsspec and s3fs.

    The endpoint and keys come from the usual variables (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a server other than AWS).
    """

    def __init__(self, url: str) -> None:
        try:
            import fsspec  # slow to import, and only an S3 store needs it
        except ImportError as exc:  # pragma: no cover - a packaging fault
            raise ConfigError("SHARED_STORE names an S3 bucket, but fsspec and s3fs are not "
                              "installed; install ACE's dependencies again.") from exc
        self._fsspec = fsspec
        self._fs: Any = None
        self._pid = 0
        self.root = url.removeprefix("s3://").rstrip("/")

    @property
    def fs(self) -> Any:
        """This process's client (one made before Celery forked its pool is not used)."""
        if self._fs is None or self._pid != os.getpid():
            options: dict[str, Any] = {}
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["endpoint_url"] = endpoint
            self._fs = self._fsspec.filesystem("s3", skip_instance_cache=True,
                                               use_listings_cache=False, **options)
            self._pid = os.getpid()
        return self._fs

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def put(self, name: str, source: Path) -> None:
        with open(source, "rb") as src, self.fs.open(self._path(name), "wb",
                                                     block_size=8 * CHUNK_BYTES) as dst:
            while chunk := src.read(CHUNK_BYTES):
                dst.write(chunk)

    def read(self, name: str) -> Iterator[bytes] | None:
        try:
            fh = self.fs.open(self._path(name), "rb", block_size=CHUNK_BYTES)
        except FileNotFoundError:
            return None

        def parts() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(CHUNK_BYTES):
                    yield chunk
        return parts()

    def _info(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.fs.info(self._path(name)))
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        info = self._info(name)
        return None if info is None else int(info.get("size") or 0)

    def modified(self, name: str) -> float | None:
        info = self._info(name)
        if info is None:
            return None
        stamp = info.get("LastModified") or info.get("mtime")
        return stamp.timestamp() if isinstance(stamp, datetime) else float(stamp or 0)

    def _names(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        base = self._path(prefix)
        folder = base.rsplit("/", 1)[0]
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
        self.fs.invalidate_cache()
        return [(path[len(self.root) + 1:], info) for path, info in found.items()
                if path.startswith(base)]

    def remove(self, prefix: str) -> int:
        names = self._names(prefix)
        if names:
            self.fs.rm([self._path(n) for n, _ in names])
        return len(names)

    def older_than(self, prefix: str, cutoff: datetime) -> list[str]:
        out = []
        for name, info in self._names(prefix):
            stamp = info.get("LastModified")
            if isinstance(stamp, datetime) and stamp < cutoff:
                out.append(name)
        return out


def store_kind(settings: Settings) -> str:
    """``local``, ``database`` or an ``s3://`` URL: what ``SHARED_STORE`` means here."""
    chosen = settings.SHARED_STORE.strip()
    if not chosen:
        return "database" if settings.DATABASE_URL.startswith("postgres") else "local"
    if chosen in ("local", "database") or chosen.startswith("s3://"):
        return chosen
    raise ConfigError(f"SHARED_STORE {chosen!r} is not local, database or an s3://bucket/prefix "
                      "URL; set it to one of those, or leave it empty for the default.")


_opened: dict[tuple[str, str], FileStore] = {}


def open_store(settings: Settings) -> FileStore | None:
    """The shared store the settings name (None: the local folder alone), opened once."""
    kind = store_kind(settings)
    if kind == "local":
        return None
    key = (kind, settings.DATABASE_URL)
    found = _opened.get(key)
    if found is None:
        if kind == "database":
            if not settings.DATABASE_URL:
                raise ConfigError("SHARED_STORE is database, but ACE_DATABASE_URL is not set; "
                                  "set it to the fleet's PostgreSQL task store.")
            # here, not at the top: dbfiles.py builds on this module (StreamedStore)
            from ace_shared.tasks.dbfiles import DatabaseFileStore
            found = DatabaseFileStore(settings.DATABASE_URL)
        else:
            found = ObjectFileStore(kind)
        _opened[key] = found
    return found


# -- this process's store: set once by each ACE program, read by the work folder ------------

_active: FileStore | None = None
_local_root: Path | None = None


def use_shared_store(settings: Settings) -> FileStore | None:
    """Make the settings' shared store this process's (for the work folder); return it."""
    global _active, _local_root
    _active = open_store(settings)
    _local_root = settings.output_dir
    return _active


def active_store() -> FileStore | None:
    return _active


def local_root() -> Path | None:
    """This host's output folder, once :func:`use_shared_store` has been called."""
    return _local_root
