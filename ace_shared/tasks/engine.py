"""Opening the task store's database: the right driver, and the table created once.

Apart from the store's reads and writes because opening is where processes
race: several may open a new store at once (a submitter and the worker that
took its message, or a fleet starting).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url

from ace_shared.outputs import create_private_file

SCHEMA_LOCK = 0x41434554  # the advisory lock that creating the task table takes on PostgreSQL


def engine_url(url: str) -> str:
    """The URL SQLAlchemy should open: ``postgresql://`` means psycopg2, as documented.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which ACE does not
    install; psycopg2 (which ACE uses for the nodes too) is named explicitly.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(
            hide_password=False)
    return url


def _private_sqlite_file(engine: Engine) -> None:
    """Create a new SQLite store 0600 (its -wal and -shm files take the same mode):
    task options and errors name tables and nodes, not for every local user."""
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        with contextlib.suppress(OSError):  # no folder, no rights: SQLite says so itself
            create_private_file(Path(database))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


@contextmanager
def _first_opener(url: str) -> Iterator[None]:
    """Let one process at a time on this host set up a SQLite store.

    Turning a new file into WAL mode reads its header and then rewrites it in one
    statement; two processes doing so at once deadlock on the file's lock, and
    SQLite answers one of them "database is locked" at once, without waiting
    (the busy timeout cannot help there). Creating the table has the same race
    ("already exists"). An advisory lock on the file's folder puts the openers
    in a row; each finds the work done by the one before. (Not a lock on the
    file itself: closing any descriptor of it would drop SQLite's own locks.)
    """
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    folder = os.open(os.path.dirname(os.path.abspath(database)) or ".", os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def _add_new_columns(conn: Connection, metadata: MetaData) -> None:
    """Give a store made by an older ACE the (nullable) columns added since."""
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))


def open_engine(url: str, metadata: MetaData) -> Engine:
    """An engine with the task table in place (created by the first process to open it)."""
    if not url.startswith("sqlite"):
        engine = create_engine(engine_url(url), pool_pre_ping=True, pool_size=5,
                               max_overflow=10)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # one creator at a time; the others then find the table
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            metadata.create_all(conn)
            _add_new_columns(conn, metadata)
        return engine
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    with _first_opener(url):
        _private_sqlite_file(engine)
        with engine.begin() as conn:
            metadata.create_all(conn)
            _add_new_columns(conn, metadata)
    return engine
