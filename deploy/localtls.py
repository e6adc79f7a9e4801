"""A small certificate authority for a scratch cluster, made with the ``openssl`` command.

ACE logs in as each caller's role with one client certificate of its own: the
nodes trust this authority (``ssl_ca_file``), accept certificate logins for
the members of ``ace_callers`` (pg_hba.conf) and map ACE's certificate to the
roles it serves (pg_ident.conf). So the scratch cluster needs a CA, a server
certificate for 127.0.0.1 and ACE's client certificate, all made here once and
kept under ``<cluster>/tls``. EC keys keep this fast.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class TlsError(RuntimeError):
    """The openssl command failed."""


@dataclass(frozen=True)
class LocalTls:
    """Where the authority, the server's and ACE's certificates live."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "ace-client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "ace-client.key"

    def ensure(self, client_cn: str) -> None:
        """Make whatever is missing: the CA, then the server and client certificates."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if not self.ca_cert.exists():
            _openssl("req", "-x509", *_KEY, "-keyout", str(self.ca_key), "-out",
                     str(self.ca_cert), "-days", DAYS, "-subj", "/CN=ACE scratch cluster CA",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        if not self.server_cert.exists():
            self._issue(self.server_key, self.server_cert, "127.0.0.1",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                        "extendedKeyUsage=serverAuth\n")
        if not self.client_cert.exists():
            self._issue(self.client_key, self.client_cert, client_cn,
                        "extendedKeyUsage=clientAuth\n")
        for key in (self.ca_key, self.server_key, self.client_key):
            os.chmod(key, 0o600)

    def _issue(self, key: Path, cert: Path, common_name: str, extensions: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
            ext.write_text(extensions)
            _openssl("req", "-new", *_KEY, "-keyout", str(key), "-out", str(csr),
                     "-subj", f"/CN={common_name}")
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey",
                     str(self.ca_key), "-CAcreateserial", "-out", str(cert), "-days", DAYS,
                     "-extfile", str(ext))


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {result.stderr.strip()}")
