#!/usr/bin/env python3
"""Scratch multi-node PostgreSQL clusters on one machine, for the demo and the tests.

ACE compares one table across the nodes of a pgEdge cluster. It only talks to the
nodes over libpq, so N plain PostgreSQL instances on different ports of 127.0.0.1
stand in well for a real multi-host cluster when trying ACE out or testing it. Each
node may run with its own server time zone, on purpose: code that renders
timestamps in the server's zone then shows up as false differences.

The nodes are scratch: fsync is off and the postgres superuser is trusted from
loopback and the node's socket. Never keep data you care about in them.

They are set up the way docs/security.md asks of a real cluster: TLS with a
certificate authority of their own (deploy/localtls.py), ACE's client
certificate allowed to log in as each role it serves (``pg_hba.conf`` line for
the members of ``ace_callers``, one ``pg_ident.conf`` line per served role),
the group role ``ace_repair`` holding the narrow grants a repair needs, and
ACE's own login (the cluster file's) without any superuser-like attribute.
:meth:`LocalCluster.serve_role` (command ``serve-role``) adds a caller.

PostgreSQL refuses to run as root, so when this runs as root every server command
goes through ``runuser -u postgres`` and the node directories belong to postgres.

Module use::

    cluster = LocalCluster(Path(".ace-local"), name="demo", ports=(6432, 6433, 6434))
    cluster.start()
    cluster.write_cluster_json(Path("cluster"))

Command use (with ``.venv/bin/python``, or any python3: the script re-runs itself
with the venv's)::

    python3 deploy/localcluster.py start --dir .ace-local --name demo --ports 6432,6433,6434 \\
        --cluster-dir cluster --admin-cluster-dir .ace-local/cluster-admin \\
        --timezones UTC,America/New_York,Asia/Kolkata
    python3 deploy/localcluster.py status --dir .ace-local --name demo
    python3 deploy/localcluster.py stop --dir .ace-local --name demo
    python3 deploy/localcluster.py serve-role --dir .ace-local --name demo --role alice --repair
    python3 deploy/localcluster.py start ... --replication     # with pglogical's settings
    python3 deploy/localcluster.py replicate --dir .ace-local --name demo \\
        --tables 'public.customers,"Sales"."Order Items"'      # a pglogical mesh (localrepl.py)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import glob
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


def _use_the_venv() -> None:
    """Re-run this script with the checkout's ``.venv/bin/python`` when started by another.

    psycopg2 and ACE are installed in ``.venv`` only; without this, ``python3
    deploy/localcluster.py serve-role ...`` run from a shell without the venv (as
    docs/security.md writes it) would stop at the first import.
    """
    try:
        import psycopg2  # noqa: F401

        import ace_shared  # noqa: F401
        return
    except ImportError:
        pass
    venv_python = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    if venv_python.is_file() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()),
                                    *sys.argv[1:]])
    sys.exit("localcluster: psycopg2 and ACE are not installed for this python; run "
             "'bash deploy/setup.sh --no-demo', then '.venv/bin/python deploy/localcluster.py'.")


if __name__ == "__main__":
    _use_the_venv()

import psycopg2  # noqa: E402
from localauth import (  # noqa: E402
    node_setup,
    operator_login,
    pg_ident,
    serve_statements,
)
from localtls import LocalTls, TlsError  # noqa: E402
from psycopg2 import sql  # noqa: E402

from ace_shared.errors import LocalClusterError  # noqa: E402

log = logging.getLogger("localcluster")

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
STATE_FILE = "localcluster.json"
CONF_INCLUDE = "ace_local.conf"
START_TIMEOUT_S = 60
# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100

PG_HBA = """\
# Written by deploy/localcluster.py on every start; edits are lost.
# Scratch cluster: the postgres superuser is trusted on loopback and the socket only.
local   all   postgres                 trust
host    all   postgres   127.0.0.1/32  trust
# ACE's own login uses its password, even if it was made a member of a served role.
host    all   "{ace_user}" 127.0.0.1/32 scram-sha-256
# ACE logs in as the roles it serves with its own client certificate (see pg_ident.conf).
hostssl all   +ace_callers 127.0.0.1/32 cert map=ace
local   all   all                      scram-sha-256
host    all   all        127.0.0.1/32  scram-sha-256
"""
TLS_DIR_ENV = "ACE_LOCAL_TLS_DIR"


@dataclass(frozen=True)
class Node:
    """Where one node lives and how it is configured."""

    name: str
    port: int
    timezone: str | None
    dir: Path
    socket_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        return self.dir / "postgres.log"


@dataclass(frozen=True)
class NodeStatus:
    """What ``status`` reports for one node."""

    name: str
    port: int
    timezone: str | None
    running: bool
    pid: int | None
    data_dir: Path


def find_pg_bin() -> Path:
    """Return the newest PostgreSQL server bin directory.

    Debian installs each major version under /usr/lib/postgresql/<major>/bin and
    keeps initdb off PATH; ``ACE_PG_BIN`` overrides, and a pg_ctl on PATH is the
    last resort (other distributions, Homebrew).
    """
    override = os.environ.get("ACE_PG_BIN")
    if override:
        if not (Path(override) / "pg_ctl").is_file():
            raise LocalClusterError(f"ACE_PG_BIN={override} has no pg_ctl in it.")
        return Path(override)
    found = [Path(p) for p in glob.glob(PG_BIN_GLOB) if (Path(p) / "initdb").is_file()]
    if found:
        return max(found, key=lambda p: _version_key(p.parent.name))
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").is_file():
        return Path(on_path).parent
    raise LocalClusterError("No PostgreSQL server found under /usr/lib/postgresql/*/bin: "
                       "run 'bash deploy/setup.sh' or 'apt-get install postgresql'.")


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)) or (0,)


def free_ports(count: int, low: int, high: int) -> list[int]:
    """Find ``count`` TCP ports in [low, high] that nothing listens on at 127.0.0.1.

    The search starts at a random offset so that two test runs on one machine
    rarely race for the same ports. The parallel workers of one test run (pytest-xdist's
    ``gw0``, ``gw1``, ...) each search a slice of the range of their own, so that two of
    them starting clusters at the same moment never pick the same port.
    """
    low, high = _worker_slice(low, high)
    span = high - low + 1
    start = int.from_bytes(os.urandom(2), "big") % span
    ports: list[int] = []
    for k in range(span):
        port = low + (start + k) % span
        if _port_is_free(port):
            ports.append(port)
            if len(ports) == count:
                return sorted(ports)
    raise LocalClusterError(f"Only {len(ports)} free ports in {low}-{high}, {count} needed.")


def _worker_slice(low: int, high: int) -> tuple[int, int]:
    """This test worker's share of [low, high], or all of it outside a parallel test run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if count <= 1 or not worker.startswith("gw") or not worker[2:].isdigit():
        return low, high
    width = (high - low + 1) // count
    index = int(worker[2:]) % count
    return low + index * width, low + (index + 1) * width - 1


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _dsn(**parts: object) -> str:
    """Build a libpq key=value DSN, quoting values that need it."""
    return " ".join(f"{key}={_dsn_value(str(value))}" for key, value in parts.items())


def _dsn_value(value: str) -> str:
    if re.fullmatch(r"[\w./:@+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conf_line(key: str, value: str) -> str:
    return f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n"


class LocalCluster:
    """N PostgreSQL nodes on 127.0.0.1, each with its own port, directory and time zone.

    Every public method is idempotent and safe to call from two processes at once
    (a file lock serialises them), so scripts can simply call ``start()`` again.
    """

    def __init__(self, base_dir: Path, name: str = "demo",
                 ports: Sequence[int] = (6432, 6433, 6434),
                 timezones: Sequence[str] | None = None, dbname: str = "acedb",
                 user: str = "ace", password: str = "ace_pw",
                 node_names: Sequence[str] | None = None,
                 served_roles: Sequence[str] = (),
                 server_settings: dict[str, str] | None = None) -> None:
        if not ports:
            raise ValueError("A cluster needs at least one port.")
        names = list(node_names) if node_names else [f"n{i + 1}" for i in range(len(ports))]
        zones: list[str | None] = list(timezones) if timezones else [None] * len(ports)
        if len(names) != len(ports) or len(zones) != len(ports):
            raise ValueError("ports, node_names and timezones must have the same length.")
        self.base_dir = Path(base_dir).resolve()
        self.name = name
        self.ports = tuple(int(p) for p in ports)
        self.timezones = tuple(zones)
        self.node_names = tuple(names)
        self.dbname, self.user, self.password = dbname, user, password
        self.root_dir = self.base_dir / name
        # Clusters started in one environment share an authority (and ACE's certificate)
        # when ACE_LOCAL_TLS_DIR names it; otherwise each has its own.
        shared = os.environ.get(TLS_DIR_ENV)
        self.tls = LocalTls(Path(shared) if shared else self.root_dir / "tls")
        self.served_roles = tuple(served_roles)
        self.nodes = [Node(n, p, tz, self.root_dir / n, self._socket_dir(n, p))
                      for n, p, tz in zip(names, self.ports, zones, strict=True)]
        # extra postgresql.conf settings for every node (e.g. shared_preload_libraries)
        self.server_settings = dict(server_settings or {})
        self._as_root = os.geteuid() == 0
        self._lock_depth = 0
        self._lock_fd: int | None = None

    @classmethod
    def from_state(cls, base_dir: Path, name: str = "demo") -> LocalCluster:
        """Rebuild the cluster that ``start()`` last recorded under ``base_dir/name``."""
        state_path = Path(base_dir) / name / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise LocalClusterError(f"No cluster recorded at {state_path}; start it first.") from None
        return cls(Path(base_dir), name=name, ports=state["ports"],
                   timezones=state["timezones"] if any(state["timezones"]) else None,
                   dbname=state["dbname"], user=state["user"], password=state["password"],
                   node_names=state["node_names"], served_roles=state.get("served_roles", ()),
                   server_settings=state.get("server_settings"))

    # ----- public API ---------------------------------------------------------------

    def start(self) -> None:
        """Create, start and wait for every node; create the ACE role and database."""
        with self._locked():
            self._write_state()
            try:
                self.tls.ensure(self.user)
            except (TlsError, OSError) as exc:
                raise LocalClusterError(f"The cluster's certificates could not be made: {exc}") \
                    from exc
            with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
                list(pool.map(self._start_node, self.nodes))

    def client_settings(self) -> dict[str, str]:
        """ACE's settings (as environment variables) for logging in with its certificate."""
        return {"ACE_USE_CERT_AUTH": "1", "ACE_USER_CERT_FILE": str(self.tls.client_cert),
                "ACE_USER_KEY_FILE": str(self.tls.client_key),
                "ACE_DB_CA_CERT_FILE": str(self.tls.ca_cert),
                TLS_DIR_ENV: str(self.tls.directory)}

    def serve_role(self, role: str, *, repair: bool = False) -> None:
        """Let ACE's certificate log in as ``role`` on every node (creating it if needed).

        The role becomes a LOGIN role in ``ace_callers`` (pg_hba.conf) with a
        pg_ident.conf line mapping ACE's certificate to it; with ``repair`` it
        also joins ``ace_repair``. It gets no password and no other right.
        """
        with self._locked():
            if role not in self.served_roles:
                self.served_roles = (*self.served_roles, role)
                self._write_state()
            for i, node in enumerate(self.nodes):
                self._admin(i, self.dbname, *serve_statements(role, repair))
                self._write_if_changed(node.data_dir / "pg_ident.conf", pg_ident(self.user, self.served_roles))
                self._admin(i, "postgres", "SELECT pg_reload_conf()")
            for i in range(len(self.nodes)):
                self._wait_role_login(i, role)

    def tcp_admin_dsn(self, i: int) -> str:
        """The postgres superuser over TCP to ACE's database: how the nodes reach one another."""
        return _dsn(host="127.0.0.1", port=self.nodes[i].port, dbname=self.dbname,
                    user="postgres")

    def replicate(self, tables: Sequence[str]) -> None:
        """Make the nodes a pglogical mesh replicating ``tables`` (see deploy/localrepl.py)."""
        from localrepl import replicate
        if "pglogical" not in self.server_settings.get("shared_preload_libraries", ""):
            raise LocalClusterError("The nodes were not started for replication; run "
                                    "'localcluster.py start --replication' first.")
        try:
            with self._locked():
                replicate([n.name for n in self.nodes],
                          [self.tcp_admin_dsn(i) for i in range(len(self.nodes))],
                          tables)
        except (psycopg2.Error, RuntimeError) as exc:
            raise LocalClusterError(f"pglogical replication could not be set up: "
                                    f"{str(exc).strip()}") from exc

    def stop(self) -> None:
        """Stop every node (fast mode: open sessions are cut off)."""
        if not self.root_dir.exists():
            return
        with self._locked(), ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(self._stop_node, self.nodes))

    def start_node(self, i: int) -> None:
        """Start node ``i`` (0-based), creating it first if needed."""
        with self._locked():
            self._start_node(self.nodes[i])

    def stop_node(self, i: int) -> None:
        """Stop node ``i`` (0-based); a stopped node is left alone."""
        if not self.root_dir.exists():
            return
        with self._locked():
            self._stop_node(self.nodes[i])

    def is_running(self, i: int) -> bool:
        """Whether node ``i``'s postmaster is alive (it may still be starting up)."""
        return self._live_pid(self.nodes[i]) is not None

    def status(self) -> list[NodeStatus]:
        """One entry per node, in node order."""
        statuses = []
        for node in self.nodes:
            pid = self._live_pid(node)
            statuses.append(NodeStatus(node.name, node.port, node.timezone, pid is not None,
                                       pid, node.data_dir))
        return statuses

    def node_dsn(self, i: int) -> str:
        """DSN for the ACE user over TCP, as ACE itself connects."""
        return _dsn(host="127.0.0.1", port=self.nodes[i].port, dbname=self.dbname,
                    user=self.user, password=self.password)

    def admin_dsn(self, i: int, dbname: str = "postgres") -> str:
        """DSN for the postgres superuser over the node's socket (trusted, works as root)."""
        node = self.nodes[i]
        return _dsn(host=node.socket_dir, port=node.port, dbname=dbname, user="postgres")

    @property
    def pg_version(self) -> str:
        """Major version of the server binaries, e.g. ``"15"``."""
        out = subprocess.run([str(find_pg_bin() / "pg_ctl"), "--version"], check=True,
                             capture_output=True, text=True).stdout
        match = re.search(r"\(PostgreSQL\) (\d+)", out)
        return match.group(1) if match else ""

    def write_cluster_json(self, cluster_dir: Path, *, admin: bool = False) -> Path:
        """Write ``<cluster_dir>/<name>/<name>.json`` in the pgEdge cluster format.

        Its login is ACE's own (not a superuser); with ``admin``, the ``postgres``
        superuser's instead: the admin cluster file, for the few commands that need
        one (docs/security.md), kept in a folder of its own.
        """
        user, password = ("postgres", "") if admin else (self.user, self.password)
        doc = {
            "json_version": "1.0",
            "cluster_name": self.name,
            "log_level": "info",
            "update_date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SGMT"),
            "pgedge": {
                "pg_version": self.pg_version,
                "auto_start": "off",
                "spock": {"spock_version": "", "auto_ddl": "off"},
                "databases": [{"db_name": self.dbname, "db_user": user,
                               "db_password": password}],
            },
            "node_groups": [
                {"ssh": {"os_user": "postgres", "private_key": ""}, "name": n.name,
                 "is_active": "on", "public_ip": "127.0.0.1", "private_ip": "127.0.0.1",
                 "port": str(n.port), "path": str(n.data_dir)}
                for n in self.nodes
            ],
        }
        target = Path(cluster_dir) / self.name / f"{self.name}.json"
        # The file holds ACE's password: readable by the user who runs ACE only.
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target.parent, 0o700)
        # Replace atomically: a worker may be reading the file at this moment.
        # NamedTemporaryFile creates it 0600, before a byte is written.
        with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False,
                                         suffix=".tmp") as tmp:
            json.dump(doc, tmp, indent=2)
            tmp.write("\n")
        os.chmod(tmp.name, 0o600)
        os.replace(tmp.name, target)
        return target

    # ----- one node -----------------------------------------------------------------

    def _start_node(self, node: Node) -> None:
        self._prepare_dirs(node)
        if not (node.data_dir / "PG_VERSION").exists():
            self._initdb(node)
        changed = self._write_config(node)
        pid = self._live_pid(node)
        if pid is not None and changed:
            log.info("%s: configuration changed, restarting", node.name)
            self._stop_node(node)
            pid = None
        if pid is None:
            self._clear_stale_locks(node)
            result = self._run([str(find_pg_bin() / "pg_ctl"), "-D", str(node.data_dir),
                                "-l", str(node.log_file), "-w", "-t", str(START_TIMEOUT_S),
                                "-s", "start"], check=False)
            if result.returncode != 0:
                raise LocalClusterError(f"Node {node.name} (port {node.port}) did not start: "
                                   f"{result.stderr.strip()}\n{self._log_tail(node)}")
        self._wait_ready(node)
        self._ensure_role_and_db(node)

    def _stop_node(self, node: Node) -> None:
        if self._live_pid(node) is None:
            return
        result = self._run([str(find_pg_bin() / "pg_ctl"), "-D", str(node.data_dir),
                            "-m", "fast", "-w", "-t", str(START_TIMEOUT_S), "-s", "stop"],
                           check=False)
        if result.returncode != 0 and self._live_pid(node) is not None:
            raise LocalClusterError(f"Node {node.name} did not stop: {result.stderr.strip()}")

    def _initdb(self, node: Node) -> None:
        if node.data_dir.exists():
            # No PG_VERSION: an earlier initdb died half way; its output is worthless.
            shutil.rmtree(node.data_dir)
        log.info("%s: initdb %s", node.name, node.data_dir)
        self._run([str(find_pg_bin() / "initdb"), "-D", str(node.data_dir), "-U", "postgres",
                   "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust",
                   "--auth-host=scram-sha-256", "--no-sync", "--no-instructions"])
        conf = node.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(f"\n# Node settings, rewritten on every start.\n"
                     f"include_if_exists = '{CONF_INCLUDE}'\n")

    def _write_config(self, node: Node) -> bool:
        """Write the node's settings and pg_hba; return True if the settings changed."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(node.port),
            "unix_socket_directories": str(node.socket_dir),
            "max_connections": "200",
            "shared_buffers": "128MB",
            "track_commit_timestamp": "on",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "ssl": "on",
            "ssl_cert_file": "server.crt",
            "ssl_key_file": "server.key",
            "ssl_ca_file": "ca.crt",
        }
        if node.timezone:
            settings["timezone"] = node.timezone
        settings.update(self.server_settings)
        text = "# Written by deploy/localcluster.py on every start; edits are lost.\n"
        text += "".join(_conf_line(k, v) for k, v in settings.items())
        changed = False
        for name, source in (("server.crt", self.tls.server_cert),
                             ("server.key", self.tls.server_key), ("ca.crt", self.tls.ca_cert)):
            changed |= self._write_if_changed(node.data_dir / name, source.read_text())
        changed |= self._write_if_changed(node.data_dir / CONF_INCLUDE, text)
        hba = PG_HBA.replace("{ace_user}", self.user.replace('"', '""'))
        self._write_if_changed(node.data_dir / "pg_hba.conf", hba)
        self._write_if_changed(node.data_dir / "pg_ident.conf", pg_ident(self.user, self.served_roles))
        return changed

    def _write_if_changed(self, path: Path, text: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == text:
                return False
        path.write_text(text)
        os.chmod(path, 0o600)
        self._chown(path)
        return True

    def _live_pid(self, node: Node) -> int | None:
        """PID of this node's postmaster, or None; a stale postmaster.pid counts as None."""
        try:
            first = (node.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not first.isdigit():
            return None
        pid = int(first)
        try:
            # The postmaster chdirs into its data directory: a reused PID will not match.
            return pid if Path(f"/proc/{pid}/cwd").resolve(strict=True) == node.data_dir else None
        except FileNotFoundError:
            return None
        except PermissionError:
            return pid if _pid_alive(pid) else None

    def _clear_stale_locks(self, node: Node) -> None:
        """Remove lock files left by a postmaster that died (crash, reboot, kill -9)."""
        for path in (node.data_dir / "postmaster.pid",
                     node.socket_dir / f".s.PGSQL.{node.port}.lock",
                     node.socket_dir / f".s.PGSQL.{node.port}"):
            if path.exists() or path.is_symlink():
                log.info("%s: removing stale %s", node.name, path)
                path.unlink()

    def _wait_ready(self, node: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        index = self.nodes.index(node)
        while True:
            try:
                psycopg2.connect(self.admin_dsn(index), connect_timeout=3).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise LocalClusterError(f"Node {node.name} does not accept connections: "
                                       f"{exc}\n{self._log_tail(node)}") from exc
                time.sleep(0.2)

    def _ensure_role_and_db(self, node: Node) -> None:
        conn = psycopg2.connect(self.admin_dsn(self.nodes.index(node)))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                # Not a superuser: a mistake elsewhere must not reach the operating system
                # (docs/security.md, "Deploying without a superuser"). ALTER demotes the
                # superuser that clusters made by earlier versions had.
                cur.execute(operator_login(self.user, self.password, exists=verb == "ALTER"))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if not cur.fetchone():
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.dbname), sql.Identifier(self.user)))
        finally:
            conn.close()
        index = self.nodes.index(node)
        self._admin(index, self.dbname, *node_setup(self.user, self.dbname))
        for role in self.served_roles:
            self._admin(index, self.dbname, *serve_statements(role, False))

    def _admin(self, index: int, dbname: str, *statements: str | sql.Composable) -> None:
        """Run statements as the postgres superuser, each in its own transaction."""
        conn = psycopg2.connect(self.admin_dsn(index, dbname))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for stmt in statements:
                    cur.execute(stmt)
        finally:
            conn.close()

    def _wait_role_login(self, index: int, role: str) -> None:
        """Wait until the node has reloaded pg_ident.conf and lets ACE in as ``role``."""
        dsn = _dsn(host="127.0.0.1", port=self.nodes[index].port, dbname=self.dbname, user=role,
                   sslmode="verify-full", sslcert=self.tls.client_cert,
                   sslkey=self.tls.client_key, sslrootcert=self.tls.ca_cert)
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg2.connect(dsn, connect_timeout=3).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise LocalClusterError(f"ACE's certificate cannot log in as {role} on node "
                                       f"{self.nodes[index].name}: {exc}") from exc
                time.sleep(0.1)

    def _log_tail(self, node: Node, lines: int = 15) -> str:
        try:
            tail = node.log_file.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return f"(no log at {node.log_file})"
        return f"Last lines of {node.log_file}:\n" + "\n".join(tail)

    # ----- files, users, locking ----------------------------------------------------

    def _socket_dir(self, node_name: str, port: int) -> Path:
        preferred = self.root_dir / node_name / "sock"
        if len(f"{preferred}/.s.PGSQL.{port}") <= MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"ace-pg-{digest}"

    def _prepare_dirs(self, node: Node) -> None:
        for path in (node.dir, node.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
            self._chown(path)
        if self._as_root:
            user = _ensure_postgres_user()
            for path in (node.dir, node.socket_dir):
                _grant_traverse(path.parent, user.pw_uid, user.pw_gid)

    def _chown(self, path: Path) -> None:
        if self._as_root:
            user = _ensure_postgres_user()
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server command, as postgres when we are root."""
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_root else args
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
        result = subprocess.run(cmd, cwd="/", env=env, capture_output=True, text=True,
                                timeout=START_TIMEOUT_S * 2, check=False)
        if check and result.returncode != 0:
            raise LocalClusterError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result

    def _write_state(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        state = {"ports": list(self.ports), "node_names": list(self.node_names),
                 "timezones": list(self.timezones), "dbname": self.dbname,
                 "user": self.user, "password": self.password,
                 "served_roles": list(self.served_roles),
                 "server_settings": self.server_settings}
        path = self.root_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        os.chmod(path, 0o600)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the cluster directory (re-entrant within one object)."""
        if self._lock_depth == 0:
            self.root_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.root_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_postgres_user() -> pwd.struct_passwd:
    """Return the postgres OS user, creating it if PostgreSQL came without one."""
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pass
    log.info("creating the postgres OS user")
    group = subprocess.run(["getent", "group", "postgres"], capture_output=True, check=False)
    group_args = ["-g", "postgres"] if group.returncode == 0 else ["--user-group"]
    subprocess.run(["useradd", "--system", *group_args, "--home-dir", "/var/lib/postgresql",
                    "--no-create-home", "--shell", "/bin/bash", "postgres"], check=True)
    return pwd.getpwnam("postgres")


def _grant_traverse(path: Path, uid: int, gid: int) -> None:
    """Let the postgres user walk down to ``path``.

    Directories such as pytest's tmp dirs are mode 0700 and owned by root; the
    server cannot reach its data directory below them. Only the search bit for
    others is added, never read or write.
    """
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if (st.st_uid == uid or st.st_mode & stat.S_IXOTH
                or (st.st_gid == gid and st.st_mode & stat.S_IXGRP)):
            continue
        log.info("adding o+x to %s so the postgres user can reach its data", directory)
        os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


# ----- command line ---------------------------------------------------------------------


def _parse_ports(text: str) -> list[int]:
    """Accept ``6432,6433,6434`` or ``6432-6434``."""
    if re.fullmatch(r"\d+-\d+", text):
        low, high = (int(p) for p in text.split("-"))
        return list(range(low, high + 1))
    return [int(p) for p in text.split(",") if p.strip()]


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",")] if text else None


def _cluster_from_args(args: argparse.Namespace) -> LocalCluster:
    """The recorded cluster (if any) with every option given on the command line applied."""
    base = Path(args.dir)
    settings: dict[str, object] = {"ports": (6432, 6433, 6434), "timezones": None,
                                   "node_names": None, "dbname": "acedb", "user": "ace",
                                   "password": "ace_pw"}
    if (base / args.name / STATE_FILE).exists():
        recorded = LocalCluster.from_state(base, args.name)
        settings.update(ports=recorded.ports, node_names=recorded.node_names,
                        timezones=recorded.timezones if any(recorded.timezones) else None,
                        dbname=recorded.dbname, user=recorded.user, password=recorded.password,
                        served_roles=recorded.served_roles,
                        server_settings=recorded.server_settings)
    given = {"ports": _parse_ports(args.ports) if args.ports else None,
             "timezones": _split(args.timezones), "node_names": _split(args.nodes),
             "dbname": args.db, "user": args.user, "password": args.password}
    settings.update({key: value for key, value in given.items() if value is not None})
    if getattr(args, "replication", False):
        from localrepl import replication_settings
        settings["server_settings"] = {**(settings.get("server_settings") or {}),  # type: ignore[dict-item]
                                       **replication_settings(find_pg_bin())}
    count = len(settings["ports"])  # type: ignore[arg-type]
    for key in ("timezones", "node_names"):
        # Recorded per-node lists do not fit a new number of ports: fall back to defaults.
        if settings[key] is not None and len(settings[key]) != count:  # type: ignore[arg-type]
            settings[key] = None
    return LocalCluster(base, name=args.name, **settings)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a scratch multi-node PostgreSQL "
                                     "cluster on 127.0.0.1 for ACE.")
    parser.add_argument("command", choices=["start", "stop", "status", "serve-role",
                                            "replicate"])
    parser.add_argument("--dir", default=".ace-local", help="base directory (.ace-local)")
    parser.add_argument("--name", default="demo", help="cluster name (demo)")
    parser.add_argument("--ports", help="6432,6433,6434 or 6432-6434 (default: as last "
                        "started, else 6432-6434)")
    parser.add_argument("--timezones", help="server time zone per node, comma separated")
    parser.add_argument("--nodes", help="node names, comma separated (n1,n2,...)")
    parser.add_argument("--db", help="database for ACE (acedb)")
    parser.add_argument("--user", help="ACE's login role, not a superuser (ace)")
    parser.add_argument("--password", help="its password (ace_pw)")
    parser.add_argument("--cluster-dir", help="also write <dir>/<name>/<name>.json here")
    parser.add_argument("--admin-cluster-dir", help="also write the admin cluster file (the "
                        "postgres superuser's login, for 'ace mtree init') here")
    parser.add_argument("--role", help="serve-role: the role ACE's certificate may log in as")
    parser.add_argument("--repair", action="store_true",
                        help="serve-role: also let the role repair (joins ace_repair)")
    parser.add_argument("--replication", action="store_true",
                        help="start: with the settings pglogical needs (kept for later starts)")
    parser.add_argument("--tables", help="replicate: tables for the set 'default', comma "
                        "separated as in SQL (a name with a comma cannot be given)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="localcluster: %(message)s",
                        stream=sys.stdout)

    try:
        cluster = _cluster_from_args(args)
        if args.command == "start":
            cluster.start()
            if args.cluster_dir:
                log.info("wrote %s", cluster.write_cluster_json(Path(args.cluster_dir)))
            if args.admin_cluster_dir:
                log.info("wrote %s", cluster.write_cluster_json(Path(args.admin_cluster_dir),
                                                                admin=True))
        elif args.command == "stop":
            cluster.stop()
        elif args.command == "serve-role":
            if not args.role:
                raise ValueError("serve-role needs --role NAME.")
            cluster.serve_role(args.role, repair=args.repair)
            log.info("ACE's certificate may now log in as %s%s", args.role,
                     " (and repair)" if args.repair else "")
        elif args.command == "replicate":
            cluster.replicate([t.strip() for t in (args.tables or "").split(",") if t.strip()])
            log.info("every node replicates with pglogical (set 'default': %s)", args.tables)
    except (LocalClusterError, ValueError) as exc:
        print(f"localcluster: {exc}", file=sys.stderr)
        return 2

    statuses = cluster.status()
    for st in statuses:
        state = f"running (pid {st.pid})" if st.running else "stopped"
        print(f"localcluster: {cluster.name}/{st.name} 127.0.0.1:{st.port} {state}, "
              f"timezone {st.timezone or 'default'}, data {st.data_dir}")
    # status exits 3 when a node is down, like pg_ctl status.
    if args.command == "status" and not all(st.running for st in statuses):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
