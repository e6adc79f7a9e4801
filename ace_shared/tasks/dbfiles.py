"""The shared file store in the task store's database: a header row per file, its bytes in
rows of :data:`~ace_shared.tasks.filestore.CHUNK_BYTES` (see :mod:`ace_shared.tasks.filestore`).

Apart from the store's interface so that a process that never shares files never
loads SQLAlchemy for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.engine import Engine

from ace_shared.tasks.engine import open_engine
from ace_shared.tasks.filestore import StreamedStore, chunks_of


def _now() -> datetime:
    return datetime.now(timezone.utc)


metadata = MetaData()
files = Table(
    "ace_files", metadata,
    Column("name", Text, primary_key=True),
    Column("generation", String(32), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)
chunks = Table(
    "ace_file_chunks", metadata,
    Column("generation", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)


class DatabaseFileStore(StreamedStore):
    """Files in the task store's database, in rows of :data:`CHUNK_BYTES`."""

    _engines: dict[str, Engine] = {}

    def __init__(self, url: str) -> None:
        engine = self._engines.get(url)
        if engine is None:
            engine = self._engines[url] = open_engine(url, metadata)
        self.engine = engine

    def put(self, name: str, source: Path) -> None:
        generation = uuid.uuid4().hex
        size = 0
        with self.engine.begin() as conn:
            for seq, chunk in enumerate(chunks_of(source)):
                conn.execute(chunks.insert().values(generation=generation, seq=seq, data=chunk))
                size += len(chunk)
            old = conn.execute(select(files.c.generation).where(files.c.name == name)
                               .with_for_update()).scalar()
            if old is None:
                conn.execute(files.insert().values(name=name, generation=generation, size=size,
                                                   created_at=_now()))
            else:
                conn.execute(files.update().where(files.c.name == name).values(
                    generation=generation, size=size, created_at=_now()))
                conn.execute(delete(chunks).where(chunks.c.generation == old))

    def _header(self, name: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(files).where(files.c.name == name)).first()

    def read(self, name: str) -> Iterator[bytes] | None:
        header = self._header(name)
        if header is None:
            return None
        return self._read(header.generation)

    def _read(self, generation: str) -> Iterator[bytes]:
        """One short query per chunk: no connection is held between chunks."""
        query = select(chunks.c.data).where(chunks.c.generation == generation)
        seq = 0
        while True:
            with self.engine.connect() as conn:
                data = conn.execute(query.where(chunks.c.seq == seq)).scalar()
            if data is None:
                return
            yield bytes(data)
            seq += 1

    def size(self, name: str) -> int | None:
        header = self._header(name)
        return None if header is None else int(header.size)

    def modified(self, name: str) -> float | None:
        header = self._header(name)
        if header is None:
            return None
        created = header.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        return float(created.timestamp())

    def remove(self, prefix: str) -> int:
        with self.engine.begin() as conn:
            gens = [r[0] for r in conn.execute(
                select(files.c.generation).where(files.c.name.startswith(prefix,
                                                                         autoescape=True)))]
            for generation in gens:
                conn.execute(delete(chunks).where(chunks.c.generation == generation))
            conn.execute(delete(files).where(files.c.name.startswith(prefix, autoescape=True)))
        return len(gens)

    def older_than(self, prefix: str, cutoff: datetime) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(
                select(files.c.name).where(files.c.name.startswith(prefix, autoescape=True))
                .where(files.c.created_at < cutoff))]


def _forget_engines() -> None:
    """In a forked child: never use the parent's pooled connections (Celery forks its pool)."""
    for engine in DatabaseFileStore._engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_engines)
