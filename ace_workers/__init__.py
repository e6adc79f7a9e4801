"""ACE's Celery workers: ``celery -A ace_workers worker|beat|flower``."""

from .app import app

__all__ = ["app"]
