"""Celery beat: scheduled diffs and auto-repair polls (filled in with the scheduler)."""
