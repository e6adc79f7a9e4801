"""Cluster definitions in the pgEdge JSON format (``cluster/<name>/<name>.json``), or
else in libpq's service files (sections ``[<name>.<node>]``, see :mod:`servicefile`).

Only what ACE needs is read: the databases with their credentials and the nodes
with their address, port and whether they are active. Older files list node
groups per cloud provider (``{"aws": [...]}``) or nest ``nodes`` inside a group;
all of those shapes flatten to the same list of :class:`Node`.
"""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ace_shared.errors import BadOptionError, ClusterError, NotFoundError
from ace_shared.nodes.servicefile import cluster_sections

# no leading dot: no "..", no hidden files; and short enough to be a file's name
_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Database:
    name: str
    user: str
    password: str


@dataclass(frozen=True)
class Node:
    name: str
    host: str
    port: int
    is_active: bool = True
    service: str | None = None  # the libpq service section it was read from, if any


@dataclass(frozen=True)
class Cluster:
    name: str
    databases: tuple[Database, ...]
    nodes: tuple[Node, ...]

    def database(self, dbname: str | None) -> Database:
        """The named database, or the first one when none is named (as in the original)."""
        if not self.databases:
            raise ClusterError(f"Cluster {self.name} defines no database.")
        if not dbname:
            return self.databases[0]
        for db in self.databases:
            if db.name == dbname:
                return db
        known = ", ".join(d.name for d in self.databases)
        raise NotFoundError(f"Database {dbname} is not in cluster {self.name} (it has: {known}).")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise NotFoundError(f"Node {name} is not in cluster {self.name} (it has: {known}).")

    def select_nodes(self, spec: str | list[str] | None) -> tuple[Node, ...]:
        """Resolve ``--nodes`` (``all`` or a comma-separated list) to active nodes, in file order."""
        if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
            chosen = [n for n in self.nodes if n.is_active]
        else:
            names = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",")]
            names = [s for s in names if s]
            if len(set(names)) != len(names):
                raise BadOptionError(f"The node list {','.join(names)} names a node twice.")
            chosen = [self.node(s) for s in names]
            inactive = [n.name for n in chosen if not n.is_active]
            if inactive:
                raise BadOptionError(
                    f"Node {', '.join(inactive)} is marked inactive in cluster {self.name}."
                )
            order = {n.name: i for i, n in enumerate(self.nodes)}
            chosen.sort(key=lambda n: order[n.name])
        if len(chosen) < 2:
            raise BadOptionError(
                f"At least two active nodes are needed to compare; cluster {self.name} "
                f"gives {len(chosen)} for --nodes={spec or 'all'}."
            )
        return tuple(chosen)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("on", "true", "yes", "1", "y")


def _node_dicts(groups: Any) -> list[dict[str, Any]]:
    if isinstance(groups, dict):
        out: list[dict[str, Any]] = []
        for value in groups.values():
            out.extend(_node_dicts(value))
        return out
    if isinstance(groups, list):
        out = []
        for item in groups:
            if isinstance(item, dict) and isinstance(item.get("nodes"), list):
                out.extend(_node_dicts(item["nodes"]))
            elif isinstance(item, dict):
                out.append(item)
        return out
    return []


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a cluster or a node."""
    return bool(name) and _NAME_RE.match(name) is not None


def check_node_name(name: str, source: str) -> None:
    """Node names follow the rule for cluster names.

    They end up in file names, in the ``n1/n2`` pair keys of diff files and in
    ``--nodes`` lists, so a ``/``, a comma or a leading dot would be misread.
    """
    if not _NAME_RE.match(name):
        raise ClusterError(f"The cluster file {source} has a node named {name!r}; rename it "
                           "using letters, digits, '_', '-' and '.' (not at the start).")


def parse_cluster(data: dict[str, Any], source: str) -> Cluster:
    """Build a :class:`Cluster` from the parsed JSON of a cluster file."""
    try:
        name = str(data["cluster_name"])
        dbs = tuple(
            Database(str(d["db_name"]), str(d["db_user"]), str(d.get("db_password", "")))
            for d in data["pgedge"]["databases"]
        )
        nodes = []
        for nd in _node_dicts(data["node_groups"]):
            host = nd.get("public_ip") or nd.get("private_ip") or nd.get("host")
            if not host:
                raise KeyError("public_ip")
            nodes.append(Node(
                name=str(nd["name"]),
                host=str(host),
                port=int(nd.get("port", 5432)),
                is_active=_truthy(nd.get("is_active", True)),
            ))
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterError(f"The cluster file {source} is malformed (problem at {exc}).") from exc
    for node in nodes:
        check_node_name(node.name, source)
    if len({n.name for n in nodes}) != len(nodes):
        raise ClusterError(f"The cluster file {source} names a node twice.")
    return Cluster(name=name, databases=dbs, nodes=tuple(nodes))


def cluster_path(cluster_dir: Path, name: str) -> Path:
    return cluster_dir / name / f"{name}.json"


def check_cluster_name(name: str) -> None:
    """Cluster names become folder and file names: letters, digits, '_', '-', '.'."""
    if not name or not _NAME_RE.match(name):
        shown = name if len(name) <= 70 else name[:60] + "..."
        raise BadOptionError(f"The cluster name {shown!r} is not valid: use at most 63 letters, "
                             "digits, '_', '-' or '.' (not first).")


def load_cluster(cluster_dir: Path, name: str) -> Cluster:
    """Read ``<cluster_dir>/<name>/<name>.json``, else the service files' ``[<name>.<node>]``."""
    check_cluster_name(name)
    path = cluster_path(cluster_dir, name)
    if not path.is_file():
        from_services = service_cluster(name)
        if from_services is not None:
            return from_services
        raise ClusterError(
            f"Cluster {name} is not defined: {path} does not exist (set ACE_CLUSTER_DIR "
            "to the folder holding your cluster definitions).",
            remote=f"Cluster {name} is not defined on this server; check the name, or ask its "
                   "operator to add the cluster's definition.")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterError(f"The cluster file {path} is not readable JSON: {exc}.",
                           remote=f"The definition of cluster {name} on this server is not "
                                  "readable; ask its operator to fix it.") from exc
    broken = (f"The definition of cluster {name} on this server is not valid; ask its "
              "operator to fix it.")
    try:
        cluster = parse_cluster(data, str(path))
    except ClusterError as exc:
        # The same sentence for a remote caller, naming the cluster instead of the server's path.
        remote = exc.message.replace(f"The cluster file {path}",
                                     f"The definition of cluster {name} on this server")
        raise ClusterError(exc.message, remote=remote if str(path) not in remote else broken
                           ) from exc
    if cluster.name != name:
        raise ClusterError(f"The cluster file {path} is for cluster {cluster.name}, not {name}.",
                           remote=broken)
    return cluster


def service_cluster(name: str) -> Cluster | None:
    """Cluster ``name`` from libpq's service files (:mod:`ace_shared.nodes.servicefile`):
    a node per section ``[<name>.<node>]``; None if no section names it."""
    found = cluster_sections(name)
    if found is None:
        return None
    path, sections = found
    source = f"{path} (sections [{name}.<node>])"
    nodes, logins = [], set()
    for node, keys in sections.items():
        check_node_name(node, source)
        if not keys.get("host") or not keys.get("dbname"):
            raise ClusterError(f"The service file section [{name}.{node}] in {path} needs "
                               "host= and dbname= for ACE to know the node; add them.")
        try:
            port = int(keys.get("port") or 5432)
        except ValueError:
            raise ClusterError(f"The service file section [{name}.{node}] in {path} has the "
                               f"port {keys['port']!r}; give a number.") from None
        nodes.append(Node(name=node, host=keys["host"], port=port, service=f"{name}.{node}"))
        logins.add((keys["dbname"], keys.get("user") or getpass.getuser()))
    if len(logins) != 1:
        raise ClusterError(f"The service file sections [{name}.<node>] in {path} name "
                           "different databases or users; give every node of a cluster the "
                           "same dbname= and user=.")
    dbname, user = logins.pop()
    # no password here: libpq takes it from the section or the password file itself
    return Cluster(name=name, databases=(Database(dbname, user, ""),), nodes=tuple(nodes))
