"""Cluster definitions in the pgEdge JSON shapes that exist in the wild."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ace_shared.errors import AceError, BadOptionError, ClusterError, NotFoundError
from ace_shared.nodes.cluster import Node, load_cluster, parse_cluster


def node(name: str, port: int, active: Any = "on") -> dict[str, Any]:
    return {"ssh": {"os_user": "postgres"}, "name": name, "is_active": active,
            "public_ip": "10.0.0.1", "private_ip": "10.1.0.1", "port": str(port)}


def doc(node_groups: Any, name: str = "prod") -> dict[str, Any]:
    return {
        "json_version": "1.0", "cluster_name": name,
        "pgedge": {"pg_version": "16", "databases": [
            {"db_name": "app", "db_user": "admin", "db_password": "pw"},
            {"db_name": "other", "db_user": "u2", "db_password": "pw2"},
        ]},
        "node_groups": node_groups,
    }


def write(tmp_path: Path, data: dict[str, Any], name: str = "prod") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_list_of_node_groups(tmp_path: Path) -> None:
    cluster = load_cluster(write(tmp_path, doc([node("n1", 5432), node("n2", 5433)])), "prod")
    assert cluster.name == "prod"
    assert cluster.nodes == (Node("n1", "10.0.0.1", 5432, True), Node("n2", "10.0.0.1", 5433, True))
    assert cluster.database(None).name == "app", "the first database is the default"
    assert cluster.database("other").user == "u2"


def test_node_groups_keyed_by_provider() -> None:
    groups = {"aws": [node("n1", 5432), node("n2", 5432)], "localhost": [node("n3", 6000)]}
    cluster = parse_cluster(doc(groups), "x.json")
    assert [n.name for n in cluster.nodes] == ["n1", "n2", "n3"]
    assert cluster.node("n3").port == 6000


def test_nodes_nested_inside_a_group() -> None:
    groups = {"remote": [{"region": "eu", "nodes": [node("a", 1), node("b", 2)]}]}
    assert [n.name for n in parse_cluster(doc(groups), "x.json").nodes] == ["a", "b"]


def test_private_ip_and_default_port_are_used_when_that_is_all_there_is() -> None:
    raw = {"name": "n1", "private_ip": "192.168.1.5"}
    cluster = parse_cluster(doc([raw, node("n2", 5433)]), "x.json")
    assert cluster.node("n1") == Node("n1", "192.168.1.5", 5432, True)


@pytest.mark.parametrize(("flag", "active"), [
    ("on", True), ("off", False), (True, True), (False, False), ("yes", True), ("no", False),
])
def test_is_active_spellings(flag: Any, active: bool) -> None:
    cluster = parse_cluster(doc([node("n1", 1, flag), node("n2", 2)]), "x.json")
    assert cluster.node("n1").is_active is active


def test_all_nodes_means_the_active_ones_in_file_order() -> None:
    cluster = parse_cluster(doc([node("n1", 1), node("n2", 2, "off"), node("n3", 3),
                                 node("n4", 4)]), "x.json")
    assert [n.name for n in cluster.select_nodes("all")] == ["n1", "n3", "n4"]
    assert [n.name for n in cluster.select_nodes(None)] == ["n1", "n3", "n4"]
    assert [n.name for n in cluster.select_nodes("n4, n1")] == ["n1", "n4"]
    assert [n.name for n in cluster.select_nodes(["n3", "n1"])] == ["n1", "n3"]


@pytest.mark.parametrize(("spec", "error", "words"), [
    ("n1,n9", NotFoundError, "n9"),
    ("n1,n2", BadOptionError, "inactive"),
    ("n1,n1", BadOptionError, "twice"),
    ("n1", BadOptionError, "two"),
])
def test_bad_node_lists_are_one_clear_error(spec: str, error: type[AceError], words: str) -> None:
    cluster = parse_cluster(doc([node("n1", 1), node("n2", 2, "off"), node("n3", 3)]), "x.json")
    with pytest.raises(error, match=words):
        cluster.select_nodes(spec)


def test_too_few_active_nodes_for_all() -> None:
    cluster = parse_cluster(doc([node("n1", 1), node("n2", 2, "off")]), "x.json")
    with pytest.raises(BadOptionError, match="two active nodes"):
        cluster.select_nodes("all")


def test_missing_cluster_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ClusterError) as err:
        load_cluster(tmp_path, "ghost")
    message = str(err.value)
    assert "ghost" in message and str(tmp_path / "ghost" / "ghost.json") in message
    assert "ACE_CLUSTER_DIR" in message


def test_unknown_database_names_the_known_ones(tmp_path: Path) -> None:
    cluster = load_cluster(write(tmp_path, doc([node("n1", 1), node("n2", 2)])), "prod")
    with pytest.raises(NotFoundError, match="app, other"):
        cluster.database("nope")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"cluster_name": "prod"}'])
def test_malformed_files_are_cluster_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "prod").mkdir()
    (tmp_path / "prod" / "prod.json").write_text(text)
    with pytest.raises(ClusterError):
        load_cluster(tmp_path, "prod")


def test_file_for_another_cluster_is_refused(tmp_path: Path) -> None:
    write(tmp_path, doc([node("n1", 1), node("n2", 2)], name="other"), name="prod")
    with pytest.raises(ClusterError, match="other"):
        load_cluster(tmp_path, "prod")


def test_duplicate_node_names_are_refused() -> None:
    with pytest.raises(ClusterError, match="twice"):
        parse_cluster(doc([node("n1", 1), node("n1", 2)]), "x.json")


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x y"])
def test_cluster_names_cannot_escape_the_cluster_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(AceError):
        load_cluster(tmp_path, name)


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", ""])
def test_cluster_names_cannot_leave_the_cluster_folder(tmp_path, name):  # type: ignore[no-untyped-def]
    with pytest.raises(AceError):
        load_cluster(tmp_path, name)
