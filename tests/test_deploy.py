"""Checks of what deploys and demonstrates ACE: compose file, scripts, local cluster, demo data.

``localcluster`` and ``demo_data`` live in deploy/, which conftest.py puts on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import demo_data
import localauth
import psycopg2
import pytest
import yaml
from api_helpers import run_sql
from localcluster import LocalCluster, free_ports
from psycopg2 import sql

FLEET_SERVICES = ("api", "worker1", "worker2", "beat", "flower")
OUTPUT_USERS = ("api", "worker1", "worker2", "beat")
PG_NODES = ("pg1", "pg2", "pg3")


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / "docker-compose.yml").read_text())


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# ----- docker-compose.yml -----------------------------------------------------------------


def test_compose_defines_every_service(compose: dict[str, Any]) -> None:
    expected = {"redis", "taskstore", *PG_NODES, *FLEET_SERVICES}
    assert expected <= set(compose["services"])


def test_compose_workers_have_distinct_node_names(compose: dict[str, Any]) -> None:
    names = []
    for service in ("worker1", "worker2"):
        command = _command(compose["services"][service])
        assert command[:4] == ["celery", "-A", "ace_workers", "worker"]
        assert "-E" in command, "workers must send events for Flower"
        names.append(command[command.index("-n") + 1])
    assert len(set(names)) == len(names), names


def test_compose_fleet_shares_no_disk_only_the_broker_and_the_store(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "ace-output" not in (compose.get("volumes") or {})
    for name in OUTPUT_USERS:  # each keeps its output folder in its own container
        assert not [v for v in services[name]["volumes"] if ":/data/output" in v], name
    envs = {name: _env(services[name]) for name in FLEET_SERVICES}
    # Redis wants the password from .env, and every URL gives it
    password = "${ACE_REDIS_PASSWORD:?put ACE_REDIS_PASSWORD in .env (openssl rand -hex 24)}"
    assert {e["ACE_BROKER_URL"] for e in envs.values()} == {f"redis://:{password}@redis:6379/0"}
    assert {e["ACE_RESULT_BACKEND"] for e in envs.values()} == {
        "redis://:${ACE_REDIS_PASSWORD}@redis:6379/1"}
    redis = services["redis"]
    assert _env(redis)["REDIS_PASSWORD"] == password
    assert "requirepass" in " ".join(_command(redis)) and "$$REDIS_PASSWORD" in _command(redis)[-1]
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name in OUTPUT_USERS:
        assert envs[name]["ACE_OUTPUT_DIR"] == "/data/output"
        assert envs[name]["ACE_CLUSTER_DIR"] == "/cluster"
        assert "./cluster:/cluster:ro" in services[name]["volumes"]
        assert envs[name]["ACE_DATABASE_URL"].startswith("postgresql://")
        assert "@taskstore:5432/" in envs[name]["ACE_DATABASE_URL"]
        assert envs[name]["ACE_SHARED_STORE"] == "database"
    # the signing key reaches what sends or runs tasks, and not Flower
    for name in OUTPUT_USERS:
        assert envs[name]["ACE_TASK_SIGNING_KEY"].startswith("${ACE_TASK_SIGNING_KEY:?")
    assert not {"ACE_TASK_SIGNING_KEY", "ACE_TASK_SIGNING_KEY_FILE"} & set(envs["flower"])
    # Flower asks for a password and is not published beyond this host
    assert envs["flower"]["FLOWER_BASIC_AUTH"].startswith("ace:${ACE_FLOWER_PASSWORD:?")
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert "./certs:/certs:ro" in services["api"]["volumes"]
    assert _command(services["api"]) == ["ace", "api", "--host", "0.0.0.0", "--port", "5000"]


def test_compose_nodes_match_the_compose_cluster_json(compose: dict[str, Any],
                                                      repo_root: Path) -> None:
    services = compose["services"]
    zones = []
    for name in PG_NODES:
        node = services[name]
        assert node["image"].startswith("postgres:15")
        assert "healthcheck" in node and node["volumes"]
        command = " ".join(_command(node))
        assert "track_commit_timestamp=on" in command
        zone = re.search(r"timezone=(\S+)", command).group(1)
        assert _env(node)["TZ"] == zone
        zones.append(zone)
    assert len(set(zones)) == len(zones), "nodes should run in different time zones"

    doc = json.loads((repo_root / "deploy/cluster-compose/compose/compose.json").read_text())
    assert doc["cluster_name"] == "compose"
    db = doc["pgedge"]["databases"][0]
    env = _env(services["pg1"])
    assert db["db_name"] == env["POSTGRES_DB"]
    # ACE's login is not the image's superuser: the init script makes it, no superuser
    assert env["POSTGRES_USER"] != db["db_user"]
    script = (repo_root / "deploy/cluster-compose/initdb/10-ace-login.sql").read_text()
    assert script == localauth.init_script(db["db_user"], db["db_password"], db["db_name"]), (
        "run: python deploy/localauth.py init-script > deploy/cluster-compose/initdb/"
        "10-ace-login.sql")
    for name in PG_NODES:
        assert "./deploy/cluster-compose/initdb:/docker-entrypoint-initdb.d:ro" in (
            services[name]["volumes"])
    assert [(n["public_ip"], n["port"]) for n in doc["node_groups"]] == [
        (name, "5432") for name in PG_NODES]


def test_the_compose_init_script_makes_a_login_that_is_no_superuser(pg_cluster: Any) -> None:
    """The script the compose nodes run, run for real (under other names, beside the
    test cluster's own login): it makes a login with none of a superuser's powers that
    may read and write every table of its database."""
    admin = psycopg2.connect(pg_cluster.admin_dsn(0))
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS compose_probe_db")
            cur.execute("DROP ROLE IF EXISTS compose_probe")
            cur.execute("CREATE DATABASE compose_probe_db")
    finally:
        admin.close()
    run_sql(pg_cluster.admin_dsn(0, "compose_probe_db"),
            localauth.init_script("compose_probe", "probe pw", "compose_probe_db"))
    ((flags,),) = run_sql(pg_cluster.admin_dsn(0), "SELECT ARRAY[rolsuper, rolcreaterole, "
                          "rolbypassrls, rolreplication, rolcanlogin] FROM pg_roles "
                          "WHERE rolname = 'compose_probe'")
    assert flags == [False, False, False, False, True]
    granted = run_sql(pg_cluster.admin_dsn(0), "SELECT pg_has_role('compose_probe', r, "
                      "'MEMBER') FROM unnest(ARRAY['pg_read_all_data', 'pg_write_all_data', "
                      "'ace_repair']) r")
    assert granted == [(True,), (True,), (True,)]


def _docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True,
                              timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_compose_config_is_valid(repo_root: Path) -> None:
    if not _docker_engine_answers():
        pytest.skip("no Docker engine answers here")
    result = subprocess.run(["docker", "compose", "config", "-q"], cwd=repo_root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ----- scripts ------------------------------------------------------------------------


def test_compose_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(_command(redis))
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))


# ----- deploy/systemd ---------------------------------------------------------------------

UNITS = ("ace-worker@.service", "ace-beat.service", "ace-api.service", "ace-flower.service")


def _unit(repo_root: Path, name: str) -> dict[str, str]:
    """The [Service] section of a unit (the last value of a key repeated)."""
    section, out = "", {}
    for line in (repo_root / "deploy" / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


@pytest.mark.parametrize("name", UNITS)
def test_systemd_units_restart_share_one_environment_file_and_run_unprivileged(
        repo_root: Path, name: str) -> None:
    service = _unit(repo_root, name)
    assert service["Restart"] in ("always", "on-failure")
    assert service["EnvironmentFile"] == "/etc/ace/ace.env"
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "", "root")
    if name == "ace-flower.service":  # the operators' view never holds the signing key
        assert "ACE_TASK_SIGNING_KEY_FILE" in service["UnsetEnvironment"]
    example = (repo_root / "deploy" / "systemd" / "ace.env.example").read_text()
    for variable in re.findall(r"\$\{(\w+)\}", service["ExecStart"]):
        assert f"\n{variable}=" in example, variable


def test_systemd_units_pass_systemd_analyze_verify(repo_root: Path, tmp_path: Path) -> None:
    """Each unit as installed (paths moved to this checkout), checked by systemd itself."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here; the units are checked where it is")
    env_file = tmp_path / "ace.env"
    shutil.copy(repo_root / "deploy" / "systemd" / "ace.env.example", env_file)
    names = []
    for name in UNITS:
        text = (repo_root / "deploy" / "systemd" / name).read_text()
        text = text.replace("/opt/ace", str(repo_root)).replace("/etc/ace/ace.env", str(env_file))
        name = name.replace("@.", "@1.")  # a template is verified as an instance
        (tmp_path / name).write_text(text)
        names.append(name)
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


@pytest.mark.parametrize("script", ["deploy/setup.sh", "deploy/test.sh", "deploy/fleet.sh",
                                    "deploy/lock.sh",
                                    ".ci/run"])
def test_script_is_strict_bash(repo_root: Path, script: str) -> None:
    path = repo_root / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_ci_passes_pytest_exit_code_through(repo_root: Path) -> None:
    assert (repo_root / ".ci/run").read_text().rstrip().endswith("exec bash deploy/test.sh")
    last = (repo_root / "deploy/test.sh").read_text().rstrip().splitlines()[-1]
    assert last == 'exec "$VENV/bin/pytest" -q "${parallel[@]}" "$@"'


# ----- LocalCluster -------------------------------------------------------------------


def _connect_ok(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def _show(dsn: str, setting: str) -> str:
    with (contextlib.closing(psycopg2.connect(dsn, connect_timeout=5)) as conn,
          conn.cursor() as cur):
        cur.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting)))
        return cur.fetchone()[0]


def test_parallel_test_workers_look_for_free_ports_in_ranges_of_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    found = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        found[worker] = {p for _ in range(10) for p in free_ports(3, 27000, 27099)}
    assert all(27000 <= p <= 27049 for p in found["gw0"]), found
    assert all(27050 <= p <= 27099 for p in found["gw1"]), found
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    anywhere = {p for _ in range(20) for p in free_ports(1, 27000, 27099)}
    assert min(anywhere) < 27050 <= max(anywhere)  # one run alone searches all of it


def test_local_cluster_lifecycle(tmp_path: Path, repo_root: Path) -> None:
    zones = ("America/New_York", "Asia/Kolkata")
    cluster = LocalCluster(tmp_path / "base", name="life", ports=free_ports(2, 25000, 26000),
                           timezones=zones)
    cli = [sys.executable, str(repo_root / "deploy/localcluster.py"), "status",
           "--dir", str(tmp_path / "base"), "--name", "life"]
    try:
        cluster.start()
        pids = [st.pid for st in cluster.status()]
        for i, zone in enumerate(zones):
            assert _show(cluster.node_dsn(i), "TimeZone") == zone
            assert _show(cluster.node_dsn(i), "track_commit_timestamp") == "on"
            assert "host=127.0.0.1" in cluster.node_dsn(i)

        started = time.monotonic()
        cluster.start()  # already running: nothing to do
        assert time.monotonic() - started < 3
        assert [st.pid for st in cluster.status()] == pids

        cluster.stop_node(1)
        assert not cluster.is_running(1)
        assert not _connect_ok(cluster.node_dsn(1))
        assert _connect_ok(cluster.node_dsn(0))
        cluster.start_node(1)
        assert _show(cluster.node_dsn(1), "TimeZone") == zones[1]

        # A postmaster.pid left by a crash, naming a PID now used by another process.
        cluster.stop_node(0)
        pid_file = cluster.nodes[0].data_dir / "postmaster.pid"
        pid_file.write_text(f"{os.getpid()}\n{cluster.nodes[0].data_dir}\n")
        cluster.start_node(0)
        assert _connect_ok(cluster.node_dsn(0))

        status = subprocess.run(cli, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("running") == 2
    finally:
        cluster.stop()
    assert not any(st.running for st in cluster.status())
    assert subprocess.run(cli, capture_output=True, timeout=30).returncode == 3


def test_write_cluster_json_is_pgedge_format(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "base", name="fmt", ports=(25901, 25902),
                           node_names=("east", "west"))
    path = cluster.write_cluster_json(tmp_path / "cluster")
    assert path == tmp_path / "cluster" / "fmt" / "fmt.json"
    doc = json.loads(path.read_text())
    assert doc["json_version"] == "1.0" and doc["cluster_name"] == "fmt"
    assert doc["pgedge"]["pg_version"].isdigit()
    assert doc["pgedge"]["databases"] == [
        {"db_name": "acedb", "db_user": "ace", "db_password": "ace_pw"}]
    nodes = doc["node_groups"]
    assert [(n["name"], n["port"], n["public_ip"]) for n in nodes] == [
        ("east", "25901", "127.0.0.1"), ("west", "25902", "127.0.0.1")]
    assert all(n["is_active"] == "on" and n["ssh"]["os_user"] == "postgres" for n in nodes)
    assert nodes[0]["path"] == str(cluster.nodes[0].data_dir)


# ----- demo data ----------------------------------------------------------------------


def _rows_by_key(dsn: str, table: str, keys: list[str]) -> dict[tuple[Any, ...], str]:
    # Render in UTC whatever the server's zone, or every timestamptz would differ.
    with (contextlib.closing(psycopg2.connect(dsn, options="-c TimeZone=UTC")) as conn,
          conn.cursor() as cur):
        cur.execute(sql.SQL("SELECT {}, t::text FROM {} AS t").format(
            sql.SQL(", ").join(map(sql.Identifier, keys)), sql.SQL(table)))
        return {tuple(row[:-1]): row[-1] for row in cur.fetchall()}


def _differing(a: dict[tuple[Any, ...], str], b: dict[tuple[Any, ...], str]) -> int:
    return sum(1 for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def test_demo_data_injects_exactly_the_divergence_it_reports(
        pg_cluster: LocalCluster) -> None:
    dbname = "demo_check"
    for i in range(3):
        with contextlib.closing(psycopg2.connect(pg_cluster.admin_dsn(i))) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(pg_cluster.user)))
    dsns = [pg_cluster.node_dsn(i).replace("dbname=acedb", f"dbname={dbname}")
            for i in range(3)]

    demo_data.load_demo(dsns, customers=1500, order_items=2000)  # twice: idempotent
    summaries = demo_data.load_demo(dsns, customers=1500, order_items=2000)

    assert [s.rows[demo_data.CUSTOMERS] for s in summaries] == [1500, 1497, 1502]
    assert [s.rows[demo_data.ORDER_ITEMS] for s in summaries] == [2000, 1998, 2003]
    assert summaries[1].line().startswith("n2: public.customers 1497 rows (3 deleted, 3 updated)")
    tables = {demo_data.CUSTOMERS: ["id"], demo_data.ORDER_ITEMS: ["Order ID", "line"]}
    rows = {(i, t): _rows_by_key(dsn, t, keys)
            for i, dsn in enumerate(dsns) for t, keys in tables.items()}
    names = [s.node for s in summaries]
    for (a, b, table), expected in demo_data.expected_pair_diffs(summaries).items():
        found = _differing(rows[(names.index(a), table)], rows[(names.index(b), table)])
        assert found == expected, (a, b, table)

    # NULL and '' must stay distinct: row g=19 is '' on n1 and NULL on n2.
    key = (demo_data.ORDER_BASE + 3, 5)
    notes = [rows[(i, demo_data.ORDER_ITEMS)][key] for i in (0, 1)]
    assert notes[0].endswith(',"")') and notes[1].endswith(",)"), notes
