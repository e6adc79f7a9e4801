"""The scratch cluster is set up as docs/security.md asks, and stays so across restarts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2
from localcluster import LocalCluster, free_ports


def _cli(repo_root: Path, base: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(repo_root / "deploy/localcluster.py"), *args,
                    "--dir", str(base), "--name", "authy"], check=True, capture_output=True,
                   timeout=180)


def test_served_roles_log_in_by_certificate_across_restarts(tmp_path: Path,
                                                            repo_root: Path) -> None:
    base = tmp_path / "base"
    port = free_ports(1, 26100, 26999)[0]
    _cli(repo_root, base, "start", "--ports", str(port))
    try:
        _cli(repo_root, base, "serve-role", "--role", "alice", "--repair")
        _cli(repo_root, base, "stop")
        _cli(repo_root, base, "start")
        cluster = LocalCluster.from_state(base, "authy")
        tls = cluster.tls
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, dbname=cluster.dbname, user="alice",
            sslmode="verify-full", sslcert=str(tls.client_cert), sslkey=str(tls.client_key),
            sslrootcert=str(tls.ca_cert))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT session_user, current_setting('is_superuser'), "
                            "has_parameter_privilege('session_replication_role', 'SET'), "
                            "pg_has_role('alice', 'ace_repair', 'MEMBER')")
                assert cur.fetchone() == ("alice", "off", True, True)
        finally:
            conn.close()
        # the certificate alone does not open ACE's own login
        try:
            psycopg2.connect(host="127.0.0.1", port=port, dbname=cluster.dbname, user="ace",
                             sslmode="verify-full", sslcert=str(tls.client_cert),
                             sslkey=str(tls.client_key), sslrootcert=str(tls.ca_cert),
                             passfile="/dev/null", connect_timeout=5).close()
        except psycopg2.OperationalError as exc:
            assert "password" in str(exc)
        else:
            raise AssertionError("ACE's certificate logged in as ace without a password")
    finally:
        _cli(repo_root, base, "stop")
