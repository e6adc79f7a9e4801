"""ACE's Celery workers: ``celery -A ace_workers worker|beat|flower``.

The Celery app is built when first asked for (:func:`ace_workers.app.get_app`),
so importing the fleet client does not build it. Celery's ``-A ace_workers``
finds it as ``ace_workers.celery``.
"""

from typing import Any

from ace_workers.app import get_app

__all__ = ["get_app"]


def __getattr__(name: str) -> Any:
    if name == "celery":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
