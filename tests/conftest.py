"""Fixtures shared by the whole test suite.

``pg_cluster`` gives the tests real PostgreSQL nodes: three of them, each with
another server time zone, on free ports so that a running demo cluster (6432-6434)
or a second test run does not get in the way.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "deploy"))

from fleet_helpers import Fleet, RedisServer, fleet_env  # noqa: E402
from localcluster import LocalCluster, free_ports  # noqa: E402

TEST_TIMEZONES = ("UTC", "America/New_York", "Asia/Kolkata")
# where the session's admin cluster file is (the postgres superuser's login), see mtree_init
ADMIN_CLUSTER_DIR_ENV = "ACE_TEST_ADMIN_CLUSTER_DIR"


def pytest_configure(config: pytest.Config) -> None:
    """Give each test run its own temporary root inside the checkout.

    The test nodes run as the ``postgres`` user under pytest's temporary folders,
    which the cluster helper opens for traversal. Under pytest's shared default
    (``/tmp/pytest-of-<user>``) every new run closes that folder again (mode 0700),
    so a second run started on the same machine cut the first one's nodes off
    their data. A folder per run, named by its process id, keeps runs apart;
    folders of runs that have ended are removed.
    """
    if config.option.basetemp:
        return
    root = REPO_ROOT / ".ace-local" / "pytest"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("run-*"):
        pid = old.name.removeprefix("run-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = str(root / f"run-{os.getpid()}")


# Fixtures that start real servers (PostgreSQL nodes, Redis, workers, an S3 server), directly
# or through another fixture; a test that uses one is marked ``db``, so that
# ``pytest -m "not db"`` runs the tests of pure logic alone, in seconds. A module's own
# server fixture is named here too; a test that starts a server in its body, or takes a
# fixture by ``request.getfixturevalue``, carries the mark itself.
SERVER_FIXTURES = frozenset({"pg_cluster", "redis_server", "fleet",
                             "pg_url", "pg_store_url", "untracked", "capped", "s3"})
# Modules whose tests start servers of their own (a cluster, a Redis, a deploy script).
SERVER_MODULES = frozenset({"test_deploy", "test_fleet_registry", "test_mtree_replication",
                            "test_security_broker", "test_security_deploy",
                            "test_security_operator", "test_replication_real",
                            "test_readme_walk", "test_fleet_sh"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs servers ``db`` (see :data:`SERVER_FIXTURES`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES or item.module.__name__ in SERVER_MODULES:
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A running 3-node cluster ``testclus`` (n1, n2, n3) for the whole session.

    Its cluster JSON is in ``$ACE_CLUSTER_DIR`` and ``$ACE_OUTPUT_DIR`` points to an
    empty directory, both set for the session and restored afterwards. The cluster
    file's login, ``ace``, is not a superuser (docs/security.md); an admin cluster
    file with the ``postgres`` superuser is in ``$ACE_TEST_ADMIN_CLUSTER_DIR``.
    """
    cluster = LocalCluster(tmp_path_factory.mktemp("pg"), name="testclus",
                           ports=free_ports(3, 16432, 16999), timezones=TEST_TIMEZONES,
                           node_names=("n1", "n2", "n3"))
    cluster_dir = tmp_path_factory.mktemp("cluster")
    admin_cluster_dir = tmp_path_factory.mktemp("cluster-admin")
    output_dir = tmp_path_factory.mktemp("output")
    saved = {key: os.environ.get(key) for key in ("ACE_CLUSTER_DIR", "ACE_OUTPUT_DIR",
                                                  ADMIN_CLUSTER_DIR_ENV,
                                                  *cluster.client_settings())}
    try:
        cluster.start()
        # ACE's own login, not a superuser; the admin file is for `ace mtree init` only
        cluster.write_cluster_json(cluster_dir)
        cluster.write_cluster_json(admin_cluster_dir, admin=True)
        os.environ[ADMIN_CLUSTER_DIR_ENV] = str(admin_cluster_dir)
        os.environ["ACE_CLUSTER_DIR"] = str(cluster_dir)
        os.environ["ACE_OUTPUT_DIR"] = str(output_dir)
        # ACE logs in with its client certificate, as the nodes expect (docs/security.md)
        os.environ.update(cluster.client_settings())
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fleet(pg_cluster: LocalCluster, redis_server: RedisServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two real workers, ``w1`` and ``w2``, on the session's Redis and test cluster.

    With ``ACE_TEST_FLEET=private`` the workers share no disk: each has an output
    folder of its own, and the task store and shared store are a PostgreSQL database
    (``tests/private_fleet.py``), as on hosts of different machines.
    """
    workdir = tmp_path_factory.mktemp("fleet")
    if os.environ.get("ACE_TEST_FLEET") == "private":
        from private_fleet import PrivateFleet, task_store_url
        fl: Fleet = PrivateFleet(workdir, fleet_env(
            redis_server, workdir, ACE_DATABASE_URL=task_store_url(pg_cluster, "ace_fleet"),
            ACE_SHARED_STORE="database"))
    else:
        fl = Fleet(workdir, fleet_env(redis_server, workdir))
    fl.start()
    yield fl
    fl.stop()


@pytest.fixture(autouse=True)
def _no_shared_store_left_behind() -> Iterator[None]:
    """A test that builds the API (or runs a front door) in this process sets its shared
    store for the process; the next test starts without it, as a new process would."""
    from ace_shared.tasks import filestore
    saved = (filestore._active, filestore._local_root)
    yield
    filestore._active, filestore._local_root = saved
