"""Revocation on connections already open: the CRL is checked on every request.

The TLS layer checks ``CA_CRL_FILE`` at each handshake, but a client that
keeps its connection alive (a poller asking every second) never shakes hands
again, so a certificate revoked after it connected would go on being served
for as long as it keeps polling. :class:`RevocationList` therefore holds the
revoked serial numbers, re-read whenever the file changes (one ``stat`` per
request), and the identity layer refuses a request whose certificate is among
them with 401 (a new connection fails the handshake on the same list).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from cryptography import x509

from ace_shared.config import Settings

logger = logging.getLogger(__name__)


def _serials(data: bytes) -> frozenset[int]:
    crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN")
           else x509.load_der_x509_crl(data))
    return frozenset(entry.serial_number for entry in crl)


class RevocationList:
    """The serial numbers ``CA_CRL_FILE`` revokes, kept current as the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RevocationList:
        return cls(Path(settings.CA_CRL_FILE).expanduser() if settings.CA_CRL_FILE else None)

    def _current(self) -> frozenset[int] | None:
        """The revoked serials; None when no list could ever be read (refuse everyone)."""
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:  # being replaced this instant: keep the last list read
            return self._serials
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return self._serials
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._serials = _serials(self.path.read_bytes())
                    self._stamp = stamp
                except (OSError, ValueError) as exc:
                    logger.error("The revocation list %s cannot be read (%s); keeping the "
                                 "last one read.", self.path, exc)
        return self._serials

    def is_revoked(self, serial_hex: str | None) -> bool:
        """Whether the certificate with this serial (hex, as ``getpeercert`` gives it) is
        revoked; with a list set but never readable, every certificate counts as revoked."""
        if self.path is None:
            return False
        serials = self._current()
        if serials is None:
            return True
        try:
            return int(serial_hex or "", 16) in serials
        except ValueError:
            return True
