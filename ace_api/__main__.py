"""``python -m ace_api`` runs the ``ace`` command line."""

from ace_api.cli import run

run()
