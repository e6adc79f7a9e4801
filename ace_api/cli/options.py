"""Click commands built from the core's option declarations (:mod:`ace_shared.options`).

:func:`build_command` turns a :class:`~ace_shared.options.Command` and a small run function
into a click command: positional words become arguments, every other option a ``--name``
whose ``--help`` line shows its type, its default (read from the settings in force) and its
bounds. Click passes every value on as the user typed it; the core's :func:`read_options`
checks them all, so a bad value gets the same sentence as through the API, with the option
named as it was written here (``--block-rows``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from ace_api.cli.exits import settings_or_fail
from ace_api.cli.output import set_json
from ace_shared.config import Settings, load_settings
from ace_shared.errors import AceError
from ace_shared.options import (
    BOOL,
    CHOICE,
    INT,
    JSON,
    NUMBER,
    OBJECT,
    Command,
    Option,
    read_option,
    read_options,
    show,
)

RunFn = Callable[[dict[str, Any], Settings], int]
# (the words on the command line, the options as given) -> the options with the words placed
WordsFn = Callable[[tuple[str, ...], dict[str, Any]], dict[str, Any]]

_METAVARS = {INT: "INTEGER", NUMBER: "FLOAT", BOOL: "[=BOOL]", OBJECT: "FILE"}
_HELP_SETTINGS = "ace.help_settings"


def _settings_for_help(ctx: click.Context) -> Settings:
    """The settings in force, so ``--help`` shows the defaults a run would use (read once)."""
    if _HELP_SETTINGS not in ctx.meta:
        try:
            ctx.meta[_HELP_SETTINGS] = load_settings()
        except AceError:  # the run says what is wrong; the help still helps
            ctx.meta[_HELP_SETTINGS] = Settings()
    settings: Settings = ctx.meta[_HELP_SETTINGS]
    return settings


def _range_text(opt: Option, settings: Settings) -> str | None:
    low, high = opt.bounds(settings)
    if low is None and high is None:
        return None
    left = "" if low is None else f"{show(low)}{'<' if opt.low_exclusive else '<='}"
    right = "" if high is None else f"<={show(high)}"
    return f"{left}x{right}"


def help_extras(opt: Option, settings: Settings) -> list[str]:
    """``default: 10000``, ``1000<=x<=100000``: what ``--help`` adds to an option's help."""
    default = opt.shown_default(settings)
    if default is None:
        text = opt.automatic or None
    elif isinstance(default, bool):
        text = str(default).lower()
    else:
        text = show(default)
    extras = [] if text is None else [f"default: {text}"]
    bounds = _range_text(opt, settings)
    return extras + ([bounds] if bounds else [])


class DeclaredOption(click.Option):
    """A ``--name`` built from a declared option; a boolean is ``--name`` or ``--name=VALUE``."""

    def __init__(self, declared: Option, help_text: str) -> None:
        self.declared = declared
        metavar = _METAVARS.get(declared.kind, "TEXT")
        if declared.kind == CHOICE:
            metavar = "[" + "|".join(declared.choices) + "]"
        flag: dict[str, Any] = ({"is_flag": False, "flag_value": "true"}
                                if declared.kind == BOOL else {})
        super().__init__([declared.label("cli"), declared.name], default=None,
                         help=help_text, metavar=metavar, **flag)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        extras = help_extras(self.declared, _settings_for_help(ctx))
        return record[0], f"{record[1]}  [{'; '.join(extras)}]" if extras else record[1]


class AceCommand(click.Command):
    """Reads a bare boolean ``--name`` as ``--name=true``.

    A value-taking option would otherwise swallow the next word, so that
    ``ace table-diff --quiet mycluster public.t`` read ``mycluster`` as the
    value of ``--quiet``; a value is only ever taken after ``=``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {o for p in self.params if isinstance(p, DeclaredOption)
                 and p.declared.kind == BOOL for o in p.opts}
        rewritten: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                rewritten.extend(args[i:])
                break
            rewritten.append(f"{arg}=true" if arg in names else arg)
        return super().parse_args(ctx, rewritten)


def _params(command: Command, words: WordsFn | None) -> list[click.Parameter]:
    positional = [o for o in command.options if o.positional]
    if (words is None) == any(o.positional_too for o in command.options):
        raise TypeError(f"{command.name}: options that are positional too need a words "
                        "function, and only they do.")
    if words is None:
        params: list[click.Parameter] = [click.Argument([o.name], required=o.required)
                                          for o in positional]
    else:  # more than one form of words: the command's own function places them
        metavar = " ".join(o.label("cli") for o in positional)
        params = [click.Argument(["words"], nargs=-1, required=True, metavar=metavar)]
    return params + [DeclaredOption(o, command.describe(o, "cli"))
                     for o in (*command.options, JSON) if not o.positional]


def build_command(command: Command, run: RunFn, words: WordsFn | None = None,
                  help_text: str | None = None, name: str | None = None) -> click.Command:
    """The click command for ``command``: its options checked, then ``run(values, settings)``.

    ``run`` gets every declared option, checked and typed (defaults filled in), and
    returns the exit code. ``words`` is for a command whose positional words come in more
    than one order (table-repair's original form); ``name`` is the command's name inside a
    group (``build`` for ``ace mtree build``), ``command.name`` otherwise.
    """
    def callback(**given: Any) -> None:
        settings = settings_or_fail()
        set_json(read_option(JSON, given.get(JSON.name), settings, "cli"))
        raw = {o.name: given.get(o.name) for o in command.options}
        if words is not None:
            raw = words(given["words"], raw)
        sys.exit(run(read_options(command, raw, settings, "cli"), settings))

    return AceCommand(name or command.name, callback=callback, params=_params(command, words),
                      help=help_text or command.help, short_help=command.help)
