"""The ACE REST API (Flask + flask-restx), served over mutual TLS by :mod:`ace_api.server`."""

from .app import create_app

__all__ = ["create_app"]
