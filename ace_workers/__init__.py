"""ACE's Celery workers: ``celery -A ace_workers worker|beat|flower``."""

from ace_workers.app import app

__all__ = ["app"]
