"""How a command prints its outcome: sentences for people, or ``--json`` for machines.

Every command prints sentences by default; ``--json`` prints the same result as
one JSON document on stdout and nothing else there (the exit code is the same),
and ``--quiet`` prints only the path of the file written. The choice is read
once per command (:func:`ace_api.cli.options.build_command`) and looked up here.
"""

from __future__ import annotations

import json
from typing import Any

import click

_JSON = "ace.json"


def set_json(wanted: bool) -> None:
    """Record the command's ``--json`` for :func:`json_wanted`."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta[_JSON] = bool(wanted)


def json_wanted() -> bool:
    """Whether this command was asked for ``--json``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().meta.get(_JSON))


def print_json(result: Any) -> None:
    """The result as one JSON document on stdout."""
    click.echo(json.dumps(result, indent=2, default=str, ensure_ascii=False))
