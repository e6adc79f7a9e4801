"""Who is calling: the common name of the client certificate the TLS layer verified.

gunicorn does not put the peer certificate in the WSGI environ, but it does
put the connection itself there (``environ["gunicorn.socket"]``); with TLS on,
that is the :class:`ssl.SSLSocket` whose handshake verified the client
certificate against the ACE certificate authority. :class:`PeerCertIdentity`
reads the certificate's common name from it on every request and stores it
under :data:`IDENTITY_KEY`, overwriting anything else, so no request header
can claim an identity. The common name is the PostgreSQL role every task of
that caller logs in as (never ``SET ROLE`` from a more powerful login: see
docs/security.md), so a certificate grants exactly its role's rights. What
the caller may then see of ACE's own records is :mod:`ace_api.rest.access`'s
business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, jsonify, request

from ace_api.rest.access import AccessPolicy
from ace_api.rest.revocation import RevocationList

IDENTITY_KEY = "ace.client_cn"
REVOKED_KEY = "ace.revoked_cn"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def common_name(peer_cert: dict[str, Any] | None) -> str | None:
    """The single commonName of a certificate as ``SSLSocket.getpeercert()`` returns it."""
    if not peer_cert:
        return None
    names = [value for rdn in peer_cert.get("subject", ()) for key, value in rdn
             if key == "commonName"]
    if len(names) != 1 or not names[0].strip():
        return None
    return str(names[0])


def peer_certificate(sock: Any) -> dict[str, Any] | None:
    """The verified client certificate on ``sock`` as ``getpeercert()`` gives it, or None."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        return getpeercert() or None
    except (ValueError, OSError):  # the connection is not (or no longer) TLS
        return None


def peer_common_name(sock: Any) -> str | None:
    """The verified client certificate's common name on ``sock``, or None."""
    return common_name(peer_certificate(sock))


class PeerCertIdentity:
    """WSGI middleware putting the verified client's common name in the environ.

    A certificate revoked since its connection's handshake (see
    :mod:`ace_api.rest.revocation`) gets no identity, and is marked so
    :func:`require_identity` can say why.
    """

    def __init__(self, app: WSGIApp, revocations: RevocationList | None = None) -> None:
        self.app = app
        self.revocations = revocations or RevocationList(None)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        cert = peer_certificate(environ.get("gunicorn.socket"))
        identity = common_name(cert)
        environ[REVOKED_KEY] = None
        if identity and self.revocations.is_revoked((cert or {}).get("serialNumber")):
            environ[REVOKED_KEY], identity = identity, None
        environ[IDENTITY_KEY] = identity
        return self.app(environ, start_response)


def caller() -> str:
    """The caller's identity for the current request (checked by :func:`require_identity`)."""
    identity = request.environ.get(IDENTITY_KEY)
    assert identity, "require_identity runs before every request"
    return str(identity)


def _refusal(message: str, status: int) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def require_identity(app: Flask, policy: AccessPolicy | None = None) -> None:
    """Answer 401 without a verified client certificate, 403 to one the allow-list omits."""
    policy = policy or AccessPolicy()

    @app.before_request
    def _check_identity() -> Response | None:
        identity = request.environ.get(IDENTITY_KEY)
        revoked = request.environ.get(REVOKED_KEY)
        if revoked:
            # every request on its open connection is refused so; a new one fails the handshake
            return _refusal(f"The certificate {revoked} has been revoked; ask the operator "
                            "of the ACE certificate authority for a new one.", 401)
        if not identity:
            return _refusal("A client certificate issued by the ACE certificate authority is "
                            "required; send one with your request.", 401)
        if not policy.may_call(str(identity)):
            return _refusal(f"The certificate {identity} is not allowed to use this API; ask "
                            "its operator to add it to API_ALLOWED_CNS.", 403)
        return None
