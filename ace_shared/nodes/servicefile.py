"""Clusters defined the PostgreSQL way: sections ``[<cluster>.<node>]`` of libpq's service files.

Besides its JSON cluster files, ACE reads a cluster from the connection service
files PostgreSQL users already keep: every section named ``<cluster>.<node>``
is a node of ``<cluster>``. The files are found as libpq finds them: the
user's (``PGSERVICEFILE``, else ``~/.pg_service.conf``) first, then the
system's (``pg_service.conf`` in ``PGSYSCONFDIR``, else in the folder
``pg_config --sysconfdir`` names); a section in the user's file hides the
system's of the same name, as it does for libpq.

ACE reads the sections only to know the nodes (their names, addresses and
database); it connects with ``service=<cluster>.<node>``, so libpq itself
applies the section (its TLS settings, its ``passfile``) and finds the password
in the section or the password file (``PGPASSFILE``, else ``~/.pgpass``).
A caller's work never uses the service (see
:func:`ace_shared.nodes.connection.node_targets`): only ACE's own login does.
"""

from __future__ import annotations

import getpass
import os
from functools import lru_cache
from pathlib import Path

from ace_shared.errors import BadOptionError, ClusterError

SERVICE_FILE = "pg_service.conf"


def user_service_file() -> Path:
    """The user's service file, where libpq looks for it."""
    named = os.environ.get("PGSERVICEFILE")
    return Path(named) if named else Path.home() / ".pg_service.conf"


@lru_cache(maxsize=1)
def _compiled_sysconfdir() -> str | None:
    import shutil  # loaded only when PGSYSCONFDIR is unset and the system file is looked for
    import subprocess

    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        found = subprocess.run([pg_config, "--sysconfdir"], capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found or None


def system_service_file() -> Path | None:
    """The system-wide service file, where libpq looks for it (None if unknown)."""
    folder = os.environ.get("PGSYSCONFDIR") or _compiled_sysconfdir()
    return Path(folder) / SERVICE_FILE if folder else None


def service_files() -> list[Path]:
    """The service files in the order libpq reads them."""
    system = system_service_file()
    return [user_service_file(), *([system] if system else [])]


def read_sections(path: Path) -> dict[str, dict[str, str]]:
    """Every section of one service file, its keywords as libpq reads them."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClusterError(f"The service file {path} cannot be read: {exc}.") from exc
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ClusterError(f"Line {number} of the service file {path} is neither a "
                               "[section] nor keyword=value; fix it as libpq would need.")
        current.setdefault(key.strip(), value.strip())
    return sections


def cluster_sections(name: str) -> tuple[Path, dict[str, dict[str, str]]] | None:
    """The sections ``[<name>.<node>]`` by node name, in file order, and the file of the
    first; None if no service file defines the cluster."""
    found: dict[str, dict[str, str]] = {}
    first: Path | None = None
    prefix = f"{name}."
    for path in service_files():
        for section, keys in read_sections(path).items():
            if section.startswith(prefix) and len(section) > len(prefix):
                node = section[len(prefix):]
                if node not in found:  # the user's file hides the system's
                    found[node] = keys
                    first = first or path
    return (first, found) if first is not None else None


def sample(cluster: str, nodes: list[tuple[str, str, int]], dbname: str,
           user: str | None = None) -> str:
    """Service-file sections defining ``cluster`` (nodes as name, host, port)."""
    login = user or getpass.getuser()
    lines = [f"# ACE cluster {cluster}: one section [{cluster}.<node>] per node. Passwords",
             "# go in ~/.pgpass (host:port:dbname:user:password), not here."]
    for node, host, port in nodes:
        lines += ["", f"[{cluster}.{node}]", f"host={host}", f"port={port}",
                  f"dbname={dbname}", f"user={login}"]
    return "\n".join(lines) + "\n"


def parse_node(spec: str) -> tuple[str, str, int]:
    """``NAME=HOST:PORT`` (the port may be left out: 5432)."""
    name, sep, address = spec.partition("=")
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "5432")
    if not sep or not name or not host or not port.isdigit():
        raise BadOptionError(f"The node {spec!r} is not NAME=HOST:PORT; write it like "
                             "n1=db1.example.com:5432.")
    return name.strip(), host.strip(), int(port)


def write_sample(path: Path, cluster: str, nodes: list[tuple[str, str, int]], dbname: str,
                 user: str | None = None) -> None:
    """Add the sections of ``cluster`` to the service file ``path`` (made 0600 if new);
    refuses if the file defines the cluster already."""
    taken = [s for s in read_sections(path) if s.startswith(f"{cluster}.")]
    if taken:
        raise BadOptionError(f"The service file {path} already defines cluster {cluster} "
                             f"([{taken[0]}]); edit it there or choose another name.")
    text = sample(cluster, nodes, dbname, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(existing + ("\n" if existing else "") + text)
