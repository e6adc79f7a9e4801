"""How the ``ace`` command ends: its exit codes, and one error line for any trouble.

The exit codes follow diff(1), so scripts can tell the outcomes apart: 0 the nodes
agree (or a repair is done), 1 they differ, 2 trouble of any kind.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from ace_shared.config import Settings, load_settings
from ace_shared.errors import AceError

EXIT_SAME, EXIT_DIFF, EXIT_TROUBLE = 0, 1, 2


def fail(message: str) -> NoReturn:
    """Say what is wrong in one ``ace: error:`` line on stderr and exit with trouble (2)."""
    click.echo(f"ace: error: {message}", err=True)
    sys.exit(EXIT_TROUBLE)


def settings_or_fail() -> Settings:
    """The settings, or one line saying what is wrong with them."""
    try:
        return load_settings()
    except AceError as exc:
        fail(str(exc))
