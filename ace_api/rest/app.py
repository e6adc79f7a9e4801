"""The Flask application of the ACE API.

:func:`create_app` builds everything from explicit settings: the ``/ace``
endpoints with their OpenAPI document (``/ace/swagger.json``, browsable at
``/ace/docs``), the ``{"error": ...}`` error format, and the client identity
taken from the verified TLS client certificate (401 without one, 403 when the
allow-list omits it). task-status polls are answered in front of Flask
(:mod:`ace_api.rest.status`).
"""

from __future__ import annotations

from flask import Blueprint, Flask
from flask.json.provider import DefaultJSONProvider

from ace_api.rest.access import AccessPolicy
from ace_api.rest.auth import PeerCertIdentity, require_identity
from ace_api.rest.callers import CallerGate, RoleCheck
from ace_api.rest.errors import AceApi, register_error_handlers
from ace_api.rest.limits import build_limiter
from ace_api.rest.metrics import serve_metrics
from ace_api.rest.resources import build_namespace
from ace_api.rest.revocation import RevocationList
from ace_api.rest.status import TaskStatusFastPath
from ace_shared.config import Settings
from ace_shared.tasks.filestore import use_shared_store

MAX_BODY_BYTES = 1024 * 1024


class InOrderJSON(DefaultJSONProvider):
    """Flask's JSON, with each answer's keys in the order the code wrote them (not sorted)."""

    sort_keys = False


def create_app(settings: Settings, role_check: RoleCheck | None = None) -> Flask:
    """The WSGI application, ready for gunicorn (or a test client).

    ``role_check`` replaces the check of a caller's role on the nodes, for tests
    of the HTTP layer alone that have no nodes; the server never passes one.
    """
    use_shared_store(settings)  # results written on other hosts are read from there
    app = Flask("ace_api", static_folder=None)
    app.config.update(
        RESTX_ERROR_404_HELP=False,
        RESTX_MASK_SWAGGER=False,
        ERROR_INCLUDE_MESSAGE=False,
        PROPAGATE_EXCEPTIONS=False,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.json = InOrderJSON(app)
    policy = AccessPolicy.from_settings(settings)
    require_identity(app, policy)  # first: the rate limit counts per verified identity
    limiter = build_limiter(app, settings)
    blueprint = Blueprint("ace", "ace_api", url_prefix="/ace")
    api = AceApi(blueprint, version="1.0", title="ACE API", doc="/docs",
                 description="Table diff, repair and rerun as queued tasks; Spock exception "
                             "status. Every request needs a client certificate.")
    api.add_namespace(build_namespace(settings, limiter))
    app.register_blueprint(blueprint)
    serve_metrics(app, settings, policy)
    register_error_handlers(app)
    gate = CallerGate(settings, role_check)
    app.extensions["ace_settings"] = settings
    app.extensions["ace_caller_gate"] = gate
    # Flask's documented way to put middleware around the app; mypy sees a method replaced
    app.wsgi_app = PeerCertIdentity(  # type: ignore[method-assign]
        TaskStatusFastPath(app.wsgi_app, settings, policy, app.logger, gate),
        RevocationList.from_settings(settings))
    return app
