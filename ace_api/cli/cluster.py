"""``ace cluster init``: start a cluster definition in libpq's service file."""

from __future__ import annotations

from pathlib import Path

import click

from ace_shared.errors import BadOptionError
from ace_shared.nodes.cluster import check_cluster_name, valid_name
from ace_shared.nodes.servicefile import parse_node, user_service_file, write_sample

DEFAULT_NODES = ("n1=localhost:5432", "n2=localhost:5433")


@click.group("cluster")
def cluster() -> None:
    """Cluster definitions."""


@cluster.command("init")
@click.argument("cluster_name")
@click.option("--node", "nodes", multiple=True, metavar="NAME=HOST:PORT",
              help="A node of the cluster (repeat for each); default: "
                   + ", ".join(DEFAULT_NODES) + ".")
@click.option("--dbname", default="postgres", show_default=True, help="The database to compare.")
@click.option("--user", default=None, help="ACE's login on every node (default: you).")
@click.option("--service-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The file to add to (default: $PGSERVICEFILE, else ~/.pg_service.conf).")
def init(cluster_name: str, nodes: tuple[str, ...], dbname: str, user: str | None,
         service_file: Path | None) -> None:
    """Add sections [CLUSTER_NAME.<node>] to your pg_service.conf, one per node."""
    check_cluster_name(cluster_name)
    parsed = [parse_node(spec) for spec in (nodes or DEFAULT_NODES)]
    for name, _, _ in parsed:
        if not valid_name(name):
            raise BadOptionError(f"The node name {name!r} is not valid: use letters, digits, "
                                 "'_', '-' and '.' (not first).")
    path = service_file or user_service_file()
    write_sample(path, cluster_name, parsed, dbname, user)
    click.echo(f"Cluster {cluster_name} written to {path} ({len(parsed)} nodes). Check each "
               "section, put the passwords in ~/.pgpass (host:port:dbname:user:password), "
               f"then run: ace table-diff {cluster_name} <schema.table>")
