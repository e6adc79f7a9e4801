"""The ACE REST API (Flask + flask-restx), served over mutual TLS by :mod:`ace_api.rest.server`."""

from ace_api.rest.app import create_app

__all__ = ["create_app"]
