"""The shared file store's backends and retention: files go in and come out whole, in
chunks, and old ones are removed."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from private_fleet import S3Server, task_store_url

from ace_shared.config import Settings
from ace_shared.diff.retention import cutoff_for, remove_old_local, remove_old_shared
from ace_shared.errors import ConfigError
from ace_shared.tasks import filestore
from ace_shared.tasks.dbfiles import DatabaseFileStore
from ace_shared.tasks.filestore import CHUNK_BYTES, ObjectFileStore, store_kind


@pytest.fixture(scope="module")
def pg_url(pg_cluster: Any) -> str:
    return task_store_url(pg_cluster, "ace_filestore")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.db)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseFileStore:
    if request.param == "sqlite":
        return DatabaseFileStore(f"sqlite:///{tmp_path / 'files.db'}")
    found = DatabaseFileStore(request.getfixturevalue("pg_url"))
    found.remove("")  # each test starts from an empty store
    return found


def test_a_file_of_many_chunks_comes_back_whole_and_a_new_version_replaces_it(
        store: DatabaseFileStore, tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    source.write_bytes(os.urandom(CHUNK_BYTES * 2 + 123))
    store.put("work/td_x/part_000000001.jsonl", source)
    assert store.size("work/td_x/part_000000001.jsonl") == source.stat().st_size
    parts = list(store.read("work/td_x/part_000000001.jsonl") or [])
    assert len(parts) == 3 and b"".join(parts) == source.read_bytes()
    source.write_bytes(b"second")
    store.put("work/td_x/part_000000001.jsonl", source)
    target = tmp_path / "copy" / "part.jsonl"
    assert store.get("work/td_x/part_000000001.jsonl", target)
    assert target.read_bytes() == b"second"
    assert store.read("work/td_x/none") is None and not store.get("none", tmp_path / "n")
    assert store.remove("work/td_x/") == 1 and store.size("work/td_x/part_000000001.jsonl") is None


def test_names_are_matched_as_text_not_as_patterns(store: DatabaseFileStore,
                                                   tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    store.put("results/td_a_b/json", source)
    store.put("results/tdXaXb/json", source)
    assert store.remove("results/td_a_b/") == 1
    assert store.size("results/tdXaXb/json") == 1


def test_the_default_store_is_the_database_only_for_a_postgresql_task_store() -> None:
    assert store_kind(Settings(DATABASE_URL="postgresql://u@h/db")) == "database"
    assert store_kind(Settings(DATABASE_URL="sqlite:////x.db")) == "local"
    assert store_kind(Settings()) == "local"
    assert store_kind(Settings(SHARED_STORE="s3://bucket/ace")) == "s3://bucket/ace"
    with pytest.raises(ConfigError, match="not local, database or an s3://"):
        store_kind(Settings(SHARED_STORE="nfs"))
    with pytest.raises(ConfigError, match="ACE_DATABASE_URL is not set"):
        filestore.open_store(Settings(SHARED_STORE="database"))


def test_retention_removes_old_work_and_results_and_keeps_new(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_work = out / "work" / "td_20240101_000000_aaaaaa"
    new_work = out / "work" / "td_20240101_000000_bbbbbb"
    day = out / "diffs" / "2024-01-01"
    for folder in (old_work, new_work, day):
        folder.mkdir(parents=True)
    (old_work / "plan.json").write_text("{}")
    (new_work / "plan.json").write_text("{}")
    old_diff, new_diff = day / "diffs_000000001.json", day / "diffs_000000002.json"
    fetched = out / "work" / "fetched"
    fetched.mkdir()
    old_copy, new_copy = fetched / "td_old.json", fetched / "td_new.json"
    for path in (old_diff, new_diff, old_copy, new_copy):
        path.write_text("{}")
    long_ago = time.time() - 40 * 86400
    for path in (old_work / "plan.json", old_work, old_diff, old_copy):
        os.utime(path, (long_ago, long_ago))
    removed = remove_old_local(out, cutoff_for(30))  # type: ignore[arg-type]
    assert (removed.folders, removed.files) == (1, 2)
    assert not old_work.exists() and not old_diff.exists() and not old_copy.exists()
    assert new_work.exists() and new_diff.exists() and new_copy.exists()
    assert cutoff_for(0) is None  # 0 days: kept forever


def test_retention_removes_old_files_from_the_shared_store(store: DatabaseFileStore,
                                                           tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    for name in ("work/td_r/plan.json", "results/td_r/json", "uploads/tr_r.json",
                 "other/keep"):
        store.put(name, source)
    assert remove_old_shared(store, datetime.now(timezone.utc) - timedelta(days=1)) == 0
    assert remove_old_shared(store, datetime.now(timezone.utc) + timedelta(seconds=5)) == 3
    assert store.size("results/td_r/json") is None and store.size("other/keep") == 1


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def test_an_s3_bucket_keeps_files_the_same_way(s3: Any, tmp_path: Path) -> None:
    store = ObjectFileStore(s3.url)
    source = tmp_path / "big.jsonl"
    source.write_bytes(os.urandom(CHUNK_BYTES * 2 + 7))
    store.put("work/td_s/part_000000001.jsonl", source)
    assert store.size("work/td_s/part_000000001.jsonl") == source.stat().st_size
    assert b"".join(store.read("work/td_s/part_000000001.jsonl") or []) == source.read_bytes()
    target = tmp_path / "copy"
    assert store.get("work/td_s/part_000000001.jsonl", target)
    assert target.read_bytes() == source.read_bytes()
    assert store.read("work/td_s/none") is None and store.size("work/td_s/none") is None
    assert store.modified("work/td_s/part_000000001.jsonl") is not None
    store.put("results/td_s/json", source)
    assert remove_old_shared(store, datetime.now(timezone.utc) - timedelta(days=1)) == 0
    assert store.remove("work/td_s/") == 1
    assert store.size("results/td_s/json") is not None
    assert remove_old_shared(store, datetime.now(timezone.utc) + timedelta(seconds=5)) == 1
    assert store.size("results/td_s/json") is None


def test_beat_removes_old_results_hourly_unless_kept_forever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ace_workers.schedule import build_beat_schedule
    monkeypatch.delenv("ACE_RESULT_RETENTION_DAYS", raising=False)
    entry = build_beat_schedule()["retention"]
    assert entry["task"] == "ace.retention" and entry["schedule"] == timedelta(hours=1)
    monkeypatch.setenv("ACE_RESULT_RETENTION_DAYS", "0")
    assert "retention" not in build_beat_schedule()
