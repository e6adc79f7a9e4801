"""Every API error as ``{"error": "<one sentence>"}`` with the right status code.

Three sources of errors meet here: :class:`AceError` from the core (its status
code is chosen here, by class, from :data:`STATUS_BY_ERROR`: the core knows
nothing of HTTP), HTTP errors raised by Flask, Werkzeug and flask-restx
themselves (unknown URL, wrong method, unreadable body), and real faults. flask-restx answers its own errors as ``{"message": ...}``; the
:class:`AceApi` subclass replaces that so a client meets one format only.
"""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from ace_shared.errors import (
    AceError,
    CallerUnverifiedError,
    ConnectionsBusyError,
    ExceptionBusyError,
    NodeUnreachableError,
    NotFoundError,
    PermissionDeniedError,
    ResultNotReadyError,
)

STATUS_BY_ERROR: dict[type[AceError], int] = {
    AceError: 400,
    NotFoundError: 404,
    PermissionDeniedError: 403,
    ExceptionBusyError: 409,
    ResultNotReadyError: 409,
    ConnectionsBusyError: 503,
    NodeUnreachableError: 502,
    CallerUnverifiedError: 503,
}
"""The status code of each kind of core error; a class not listed takes its nearest parent's."""


class ApiError(AceError):
    """An error the API itself reports (not from the core), with its own status code.

    The one ACE error defined outside ``ace_shared.errors``: it is about HTTP
    (a body that is not JSON, a queue the API cannot reach), which the core
    never meets.
    """

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


def _http_message(exc: HTTPException) -> str:
    """A plain sentence for an HTTP error raised by the web framework."""
    if exc.code == 404:
        return f"There is no endpoint {request.path}; the API is described at /ace/docs."
    if exc.code == 405:
        allowed = sorted(m for m in (getattr(exc, "valid_methods", None) or [])
                         if m not in ("HEAD", "OPTIONS"))
        use = f"; use {' or '.join(allowed)}" if allowed else ""
        return f"{request.path} does not accept {request.method}{use}."
    if exc.code == 415:
        return "The request body must be JSON sent with Content-Type: application/json."
    if exc.code == 413:
        return "The request body is larger than the 1 MiB the API accepts."
    if exc.code == 429:  # Flask-Limiter's RateLimitExceeded (API_RATE_LIMIT)
        limit = getattr(getattr(exc, "limit", None), "limit", None)
        return (f"You have reached the API's limit of {limit or 'submissions'} for your "
                "certificate; wait a little, then submit again.")
    description = (exc.description or exc.name or "The request was not understood").strip()
    return description if description.endswith(".") else description + "."


def status_for(exc: AceError) -> int:
    """The status code for an ACE error: its own for :class:`ApiError`, else by class."""
    if isinstance(exc, ApiError):
        return exc.http_status
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return STATUS_BY_ERROR[AceError]


def describe_error(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """The status code, message and extra headers to answer ``exc`` with."""
    if isinstance(exc, AceError):  # a remote caller is told nothing of the server's paths
        return status_for(exc), getattr(exc, "remote_message", exc.message), {}
    if isinstance(exc, HTTPException) and exc.code is not None:
        headers: dict[str, str] = {}
        if exc.code == 405:
            allow = exc.get_response().headers.get("Allow")
            if allow:
                headers["Allow"] = allow
        return exc.code, _http_message(exc), headers
    return 500, ("The API met an internal error "
                 f"({exc.__class__.__name__}); the server log has the details."), {}


def error_response(exc: BaseException) -> Response:
    status, message, headers = describe_error(exc)
    if status >= 500 and isinstance(exc, AceError):  # a known outage: one line is enough
        current_app.logger.error("%s %s answered %s: %s", request.method, request.path,
                                 status, message)
    elif status >= 500:  # a fault: keep the traceback
        exc_info = sys.exc_info()
        current_app.log_exception(
            exc_info if exc_info[1] is not None else
            # Flask's annotation wants a traceback; logging, which it passes this to, takes None
            (type(exc), exc, exc.__traceback__))  # type: ignore[arg-type]
    response = jsonify({"error": message})
    response.status_code = status
    for name, value in headers.items():
        response.headers[name] = value
    return response


class AceApi(Api):
    """flask-restx's Api, answering every error in ACE's ``{"error": ...}`` format."""

    def handle_error(self, e: Exception) -> Response:  # noqa: D102 - see class docstring
        return error_response(e)


def register_error_handlers(app: Flask) -> None:
    """Errors raised outside the Api's routes (unknown URLs, docs assets) get the same format."""

    def handle(exc: Exception) -> Any:
        return error_response(exc)

    app.register_error_handler(HTTPException, handle)
    app.register_error_handler(Exception, handle)
