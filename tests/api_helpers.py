"""Certificates and a real ``ace api`` server process, for the API tests.

The certificates come from the project's own development authority
(``deploy/certs.py``): a server certificate for 127.0.0.1, client
certificates whose common names are PostgreSQL roles, one from an unrelated
authority and one that has expired. :class:`ApiServer` runs ``ace api`` (gunicorn, mutual TLS) as a
child process against a fleet's Redis and task store.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from certs import Authority  # deploy/certs.py (conftest puts deploy/ on sys.path)
from node_sql import run_sql as run_sql  # the tests' one SQL-on-a-node helper

REPO_ROOT = Path(__file__).resolve().parent.parent

@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)


@dataclass
class ApiCerts:
    """The test PKI, made by the project's own ``deploy/certs.py`` authority.

    ``client(cn)`` issues (once) a client certificate for a role; a certificate
    from an unrelated authority and an expired one serve the refusal tests.
    """

    ca: Authority
    other_ca_client: ClientCert
    expired_client: ClientCert
    _clients: dict[str, ClientCert] = field(default_factory=dict)

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    @property
    def server_cert(self) -> Path:
        return self.ca.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.ca.directory / "server.key"

    def client(self, common_name: str) -> ClientCert:
        if common_name not in self._clients:
            self._clients[common_name] = ClientCert(*self.ca.issue_client(common_name))
        return self._clients[common_name]


def make_certs(directory: Path) -> ApiCerts:
    ca = Authority(directory / "certs")
    ca.issue_server(("127.0.0.1", "localhost"))
    stranger = ClientCert(*Authority(directory / "other-ca").issue_client("api_reader"))
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    expired = ClientCert(*ca.issue_client("api_reader", not_after=long_ago,
                                          stem="expired-api_reader"))
    return ApiCerts(ca, stranger, expired)


class ApiServer:
    """``ace api`` in a child process (its own process group), on a free port."""

    def __init__(self, env: dict[str, str], certs: ApiCerts, port: int, log: Path,
                 workers: int = 2, threads: int = 4) -> None:
        self.port = port
        self.certs = certs
        self.log = log
        self.env = {
            **env,
            "ACE_API_CERT_FILE": str(certs.server_cert),
            "ACE_API_KEY_FILE": str(certs.server_key),
            "ACE_CA_CERT_FILE": str(certs.ca_file),
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.args = [sys.executable, "-m", "ace_api", "api", "--port", str(port),
                     "--workers", str(workers), "--threads", str(threads)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def session(self, common_name: str) -> requests.Session:
        """A requests session presenting the client certificate of ``common_name``."""
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the test CA
        s.cert = self.certs.client(common_name).pair
        s.verify = str(self.certs.ca_file)
        return s

    def start(self, timeout: float = 30) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.log.parent,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        probe = self.session("ace")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ace api exited with {self.proc.returncode}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            try:
                if probe.get(self.url("/ace/swagger.json"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("ace api did not answer in time:\n"
                           + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_for_final(session: requests.Session, url: str, timeout: float = 60
                   ) -> tuple[dict[str, Any], list[str]]:
    """Poll a task-status URL until COMPLETED or FAILED; return it and the statuses seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = session.get(url, timeout=10)
        assert response.status_code == 200, response.text
        doc = response.json()
        if not seen or seen[-1] != doc["status"]:
            seen.append(doc["status"])
        if doc["status"] in ("COMPLETED", "FAILED"):
            return doc, seen
        time.sleep(0.05)
    raise TimeoutError(f"task at {url} did not finish; statuses seen: {seen}")
