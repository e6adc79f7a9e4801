#!/usr/bin/env python3
"""A development certificate authority for the ACE API: CA, server and client certificates.

The API serves only mutual TLS, and a client certificate's common name is the
PostgreSQL role its tasks run as. This makes everything a demo or a test
fleet needs, in one folder (``./certs`` by default)::

    ca.crt  ca.key        the authority (CA_CERT_FILE); its key signs everything below
    ca.crl                its revocation list (CA_CRL_FILE), empty until --revoke
    server.crt/.key       the API's certificate (ACE_API_CERT_FILE/ACE_API_KEY_FILE)
    <cn>.crt/.key         one client certificate per common name (= PostgreSQL role)

Running it again reuses the authority and issues only what is missing, so
certificates handed out earlier stay valid. Keys are written readable by
their owner only (0600), in a folder only its owner may enter (0700).
For development and tests: a production CA keeps its key elsewhere.

Usage::

    .venv/bin/python deploy/certs.py ace api_reader          # CA, server, two clients
    .venv/bin/python deploy/certs.py --server-name api.example.net
    .venv/bin/python deploy/certs.py --revoke api_reader     # add it to ca.crl
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
CRL_DAYS = 365
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
# A common name is also a file name here (and a role name in PostgreSQL).
_CN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")

PrivateKey = ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (never briefly wider)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_key(path: Path, key: PrivateKey) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACE development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Authority:
    """The CA in ``directory``: created on first use, reused afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key_file, cert_file = self.directory / "ca.key", self.directory / "ca.crt"
        if key_file.exists() and cert_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.key: PrivateKey = key
            self.cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            name = _name("ACE development CA")
            self.cert = (
                x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(_now() - dt.timedelta(minutes=5))
                .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
            _write_key(key_file, self.key)
            _write_cert(cert_file, self.cert)
        if not self.crl_file.exists():
            self.write_crl([])

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def crl_file(self) -> Path:
        return self.directory / "ca.crl"

    def _leaf(self, common_name: str, usage: x509.ObjectIdentifier,
              alt_names: Sequence[x509.GeneralName] = (),
              not_after: dt.datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
        # A client certificate names its role in the subject alone: an empty
        # SubjectAlternativeName is invalid (newer cryptography refuses to build one),
        # so the extension is added only when there are names for it.
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = not_after or _now() + dt.timedelta(days=LEAF_DAYS)
        # valid from five minutes ago (clock skew), or, for a certificate made to be
        # expired already, from a day before it expired
        not_before = min(_now() - dt.timedelta(minutes=5), not_after - dt.timedelta(days=1))
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False))
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)),
                                            critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def issue_server(self, names: Sequence[str] = DEFAULT_SERVER_NAMES,
                     stem: str = "server") -> tuple[Path, Path]:
        """``<stem>.crt``/``.key`` for the API, valid for ``names`` (host names or IPs)."""
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert, key = self._leaf(names[0], ExtendedKeyUsageOID.SERVER_AUTH, alt)
        return self._save(stem, cert, key)

    def issue_client(self, common_name: str, not_after: dt.datetime | None = None,
                     stem: str | None = None) -> tuple[Path, Path]:
        """``<stem>.crt``/``.key`` (``stem`` defaults to the common name): a client
        certificate whose common name is a PostgreSQL role."""
        if not _CN_RE.match(common_name):
            raise ValueError(f"{common_name!r} is not usable as a common name here: use "
                             "letters, digits, _ . - (starting with a letter or _).")
        cert, key = self._leaf(common_name, ExtendedKeyUsageOID.CLIENT_AUTH,
                               not_after=not_after)
        return self._save(stem or common_name, cert, key)

    def _save(self, stem: str, cert: x509.Certificate, key: PrivateKey) -> tuple[Path, Path]:
        cert_file, key_file = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        _write_key(key_file, key)
        _write_cert(cert_file, cert)
        return cert_file, key_file

    def revoke(self, cert_file: Path) -> None:
        """Add the certificate in ``cert_file`` to ``ca.crl`` (kept: earlier revocations)."""
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        if cert.issuer != self.cert.subject:
            raise ValueError(f"{cert_file} was not issued by this authority.")
        crl = x509.load_pem_x509_crl(self.crl_file.read_bytes())
        serials = [r.serial_number for r in crl]
        if cert.serial_number not in serials:
            serials.append(cert.serial_number)
        self.write_crl(serials)

    def write_crl(self, serials: Sequence[int]) -> None:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(_now() - dt.timedelta(minutes=5))
                   .next_update(_now() + dt.timedelta(days=CRL_DAYS)))
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(_now() - dt.timedelta(minutes=1)).build())
        crl = builder.sign(self.key, hashes.SHA256())
        _write(self.crl_file, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("common_names", nargs="*", metavar="CN",
                        help="client certificates to issue (each a PostgreSQL role)")
    parser.add_argument("--dir", default="certs", help="where the files go (default: ./certs)")
    parser.add_argument("--server-name", action="append", dest="server_names",
                        help="a host name or IP the API is reached at (repeatable; default: "
                             "localhost, 127.0.0.1, ::1)")
    parser.add_argument("--revoke", action="append", default=[], metavar="CN",
                        help="add <CN>.crt to ca.crl (set CA_CRL_FILE to use it)")
    parser.add_argument("--force", action="store_true",
                        help="issue the server and named client certificates again")
    args = parser.parse_args(argv)
    try:
        ca = Authority(Path(args.dir))
        server = ca.directory / "server.crt"
        if args.force or args.server_names or not server.exists():
            ca.issue_server(tuple(args.server_names or DEFAULT_SERVER_NAMES))
            print(f"server certificate: {server}")
        for cn in args.common_names:
            if args.force or not (ca.directory / f"{cn}.crt").exists():
                ca.issue_client(cn)
                print(f"client certificate for role {cn}: {ca.directory / cn}.crt")
        for cn in args.revoke:
            ca.revoke(ca.directory / f"{cn}.crt")
            print(f"revoked {cn} in {ca.crl_file}")
    except (ValueError, OSError) as exc:
        print(f"certs: {exc}", file=sys.stderr)
        return 2
    print(f"authority: {ca.ca_file} (revocation list {ca.crl_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
