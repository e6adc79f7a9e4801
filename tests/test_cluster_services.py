"""Clusters defined in libpq's service files, ``[<cluster>.<node>]``, beside the JSON files.

``ace cluster init`` writes the sections; ``ace table-diff`` then finds the
cluster there (no JSON file exists), connects through ``service=`` and takes
ACE's password from the password file, as libpq does for any PostgreSQL tool.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import labelled_items, run_ace

from ace_shared.errors import ClusterError
from ace_shared.nodes.cluster import load_cluster

TABLE = "svc_items"


@pytest.fixture(scope="module")
def items(pg_cluster: Any) -> str:
    return labelled_items(pg_cluster, TABLE, 300, "id IN (3, 33)")


def _env(tmp_path: Path, service_file: Path, passfile: Path | None = None) -> dict[str, str]:
    empty = tmp_path / "no-json-clusters"
    empty.mkdir(exist_ok=True)
    env = {"PGSERVICEFILE": str(service_file), "ACE_CLUSTER_DIR": str(empty),
           "PGSYSCONFDIR": str(tmp_path / "sysconf"), "ACE_BROKER_URL": ""}
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    return env


def test_cluster_init_writes_sections_a_table_diff_then_uses(
        pg_cluster: Any, items: str, tmp_path: Path) -> None:
    services = tmp_path / "pg_service.conf"
    nodes = [f"--node=n{i + 1}=127.0.0.1:{port}" for i, port in enumerate(pg_cluster.ports)]
    made = run_ace("cluster", "init", "svc", *nodes, f"--dbname={pg_cluster.dbname}",
                   f"--user={pg_cluster.user}", f"--service-file={services}")
    assert made.code == 0, made.stderr
    assert f"Cluster svc written to {services} (3 nodes)" in made.stdout
    assert stat.S_IMODE(services.stat().st_mode) == 0o600
    text = services.read_text()
    assert f"[svc.n2]\nhost=127.0.0.1\nport={pg_cluster.ports[1]}\n" in text
    assert "password" not in text.replace("Passwords", "").replace("password)", "")

    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:{pg_cluster.dbname}:{pg_cluster.user}:"
                        f"{pg_cluster.password}\n")
    passfile.chmod(0o600)
    run = run_ace("table-diff", "svc", items, "--quiet",
                  env=_env(tmp_path, services, passfile), fresh_process=True)
    assert run.code == 1, (run.stdout, run.stderr)  # found the cluster, logged in, differs
    without = run_ace("table-diff", "svc", items, env=_env(tmp_path, services, tmp_path / "none"),
                      fresh_process=True)
    assert without.code == 2 and "refused the login of user" in without.stderr  # libpq's lookup

    again = run_ace("cluster", "init", "svc", f"--service-file={services}")
    assert again.code == 2
    assert again.stderr.strip() == (f"ace: error: The service file {services} already defines "
                                    "cluster svc ([svc.n1]); edit it there or choose another "
                                    "name.")


def test_the_users_file_hides_the_systems_and_json_files_come_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sysconf = tmp_path / "sysconf"
    sysconf.mkdir()
    (sysconf / "pg_service.conf").write_text(
        "[dual.n1]\nhost=sys1\nport=5001\ndbname=db\n\n[dual.n3]\nhost=sys3\ndbname=db\n")
    user = tmp_path / "user.conf"
    user.write_text("# mine\n[dual.n1]\nhost=mine1\nport=6001\ndbname=db\nuser=me\n"
                    "[other.n1]\nhost=x\ndbname=db\n")
    monkeypatch.setenv("PGSERVICEFILE", str(user))
    monkeypatch.setenv("PGSYSCONFDIR", str(sysconf))
    for name in ("LOGNAME", "USER"):
        monkeypatch.setenv(name, "me")
    cluster = load_cluster(tmp_path / "none", "dual")
    assert [(n.name, n.host, n.port, n.service) for n in cluster.nodes] == [
        ("n1", "mine1", 6001, "dual.n1"), ("n3", "sys3", 5432, "dual.n3")]
    assert cluster.database(None).name == "db" and cluster.database(None).user == "me"
    (sysconf / "pg_service.conf").write_text("[bad.n1]\nhost=h\n")
    with pytest.raises(ClusterError, match=r"needs host= and dbname="):
        load_cluster(tmp_path / "none", "bad")
    with pytest.raises(ClusterError, match="Cluster nowhere is not defined"):
        load_cluster(tmp_path / "none", "nowhere")


def test_a_node_that_is_not_name_host_port_is_one_sentence(tmp_path: Path) -> None:
    run = run_ace("cluster", "init", "svc2", "--node=n1:db1:5432",
                  f"--service-file={tmp_path / 'pg_service.conf'}")
    assert run.code == 2
    assert run.stderr.strip() == ("ace: error: The node 'n1:db1:5432' is not NAME=HOST:PORT; "
                                  "write it like n1=db1.example.com:5432.")
    assert not (tmp_path / "pg_service.conf").exists()
