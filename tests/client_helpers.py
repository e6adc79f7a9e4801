"""The API application in-process, through Flask's test client, as a given caller.

gunicorn hands the app the verified TLS connection in
``environ["gunicorn.socket"]``; :class:`PeerSocket` stands there and answers
``getpeercert()`` as ``ssl.SSLSocket`` would, so the app's identity check
runs unchanged. The role gate that asks every node about a caller is tested
on real nodes in ``test_security_api_identity.py``; these clients skip it
(:func:`serve_any_role`).
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from ace_api.rest import create_app
from ace_shared.config import Settings


class PeerSocket:
    """Stands where gunicorn puts the TLS connection; answers like ``SSLSocket.getpeercert``."""

    def __init__(self, cert: dict[str, Any] | None) -> None:
        self.cert = cert

    def getpeercert(self) -> dict[str, Any] | None:
        return self.cert


def cert_for(*names: str) -> dict[str, Any]:
    """A verified certificate's subject with these common names (none, one or several)."""
    return {"subject": ((("organizationName", "ACE tests"),),
                        *((("commonName", n),) for n in names))}


def as_caller(cn: str = "ace") -> dict[str, Any]:
    """The ``environ_base`` of a request made with a certificate for ``cn``."""
    return {"gunicorn.socket": PeerSocket(cert_for(cn))}


def serve_any_role(_cluster: str, _role: str) -> None:
    """Lets every caller through the role gate (tested in test_security_api_identity.py)."""


def api_client(settings: Settings) -> FlaskClient:
    """A test client of the app on ``settings``, its rate limits counted in this app alone:
    the default, the broker's Redis, is shared by every test within the limit's minute."""
    own = settings.with_overrides(API_RATE_LIMIT_STORAGE="memory://")
    return create_app(own, serve_any_role).test_client()


def call(client: FlaskClient, method: str, path: str, cn: str | None = "ace",
         **kwargs: Any) -> Any:
    """One request as the caller ``cn`` (``None``: without a certificate)."""
    sock = PeerSocket(cert_for(cn) if cn else None)
    return client.open(path, method=method, environ_base={"gunicorn.socket": sock}, **kwargs)
