"""Each command's options, declared once: the CLI, the REST API and the core read this one table.

A command is a :class:`Command`: its name, one line of help, and its :class:`Option` s. An
option says everything the front doors need: its name (the request key; the API uses it as
written, the CLI as ``--block-rows``, or ``TABLE_NAME`` when it is a positional word), its kind,
its default (a literal, or the name of the :class:`~ace_shared.config.Settings` field that holds
it), its bounds (numbers or settings names), its choices and its help. From the declaration

* ``ace_api/cli/options.py`` builds the click command, whose ``--help`` shows each option's type
  and default, and where a boolean is written ``--dry-run`` or ``--dry-run=True``;
* ``ace_api/rest/models.py`` builds the flask-restx model: the OpenAPI document, and the first
  check of every request, with the same defaults, bounds and choices;
* :func:`read_options` checks a request in the core, fills in the defaults, and raises a
  :class:`BadOptionError` naming the option as the user wrote it (``style="cli"`` or ``"api"``).

So the CLI and the API cannot drift apart: neither writes an option out itself.

Adding a command (say ``sequence-diff``, which does not exist yet; ``schema-diff`` is a
finished example):

1. Declare it next to its request module, ``SEQUENCE_DIFF = Command("sequence-diff",
   "Compare ...", (CLUSTER_NAME, Option("schema_name", TEXT, "...", required=True,
   positional=True), ...))``, and let its validator begin with
   ``values = read_options(SEQUENCE_DIFF, raw, settings, style)`` before any rule that spans
   options (name options in its messages with ``SEQUENCE_DIFF.label(name, style)``).
2. CLI: one small run function ``run(values, settings) -> exit code`` (``values``: every
   declared option, checked, defaults filled in), registered in ``ace_api/cli/main.py`` with
   ``main.add_command(build_command(SEQUENCE_DIFF, run))``; it prints sentences, or the
   result with ``print_json`` when ``json_wanted()`` (``--json``, which every command gets).
3. API: one line ``(SEQUENCE_DIFF, submit_fn)`` in ``SUBMISSIONS`` in ``ace_api/rest/resources.py``,
   where ``submit_fn`` validates and queues (see ``ace_api/rest/submissions.py``); the task
   itself lives in ``ace_workers``.

A group such as ``ace mtree ...`` is a ``click.Group`` added to ``main``, its commands built the
same way with a short name: ``mtree.add_command(build_command(MTREE_BUILD, run, name="build"))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ace_shared.config import Settings
from ace_shared.errors import BadOptionError

Kind = Literal["text", "int", "number", "bool", "choice", "object"]
TEXT: Final = "text"
INT: Final = "int"
NUMBER: Final = "number"
BOOL: Final = "bool"
CHOICE: Final = "choice"
# a JSON object through the API; on the command line, the path of a file that holds it
OBJECT: Final = "object"
Style = Literal["api", "cli"]
Bound = int | float | str | None  # a number, or the name of the Settings field that holds it

_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off", "")


@dataclass(frozen=True)
class Option:
    """One option of a command, as every front door sees it.

    A ``BOOL`` option is written ``--dry-run`` or ``--dry-run=True`` on the command line
    (``true/false``, ``1/0``, ``yes/no``, ``on/off``), ``true``/``false`` in the API.
    """

    name: str
    kind: Kind
    help: str  # may name other options of the command as {insert_only}
    default: Any = None
    setting: str | None = None  # the Settings field holding the default (wins over ``default``)
    low: Bound = None
    high: Bound = None
    low_exclusive: bool = False
    choices: tuple[str, ...] = ()
    required: bool = False
    required_hint: str = ""  # said after "... is required", e.g. ", written as schema.table"
    positional: bool = False  # a word on the command line (CLUSTER_NAME), not --cluster-name
    # an option the CLI also takes as a word, in a second form of the command line that
    # the command's CLI places (table-repair CLUSTER DIFF_FILE SOURCE TABLE)
    positional_too: bool = False
    automatic: str = ""  # what a default of none (or 0) means, e.g. "chosen for the fleet"
    api: bool = True  # also a parameter of the REST API (``no_wait`` is the CLI's alone)

    def label(self, style: Style) -> str:
        """The option as the user wrote it: ``block_rows`` (API), ``--block-rows`` (CLI)."""
        if style == "api":
            return self.name
        if self.positional:
            return self.name.upper()
        return "--" + self.name.replace("_", "-")

    def default_in(self, settings: Settings) -> Any:
        """The default, read from the settings where it lives there."""
        if self.setting:
            return getattr(settings, self.setting)
        if self.kind == BOOL and self.default is None:
            return False
        return self.default

    def shown_default(self, settings: Settings) -> Any:
        """The default as documented; ``None`` when ACE chooses (see :attr:`automatic`)."""
        value = self.default_in(settings)
        if self.automatic and not value:
            return None
        return value

    def bounds(self, settings: Settings) -> tuple[int | float | None, int | float | None]:
        return _resolve(self.low, settings), _resolve(self.high, settings)


def _resolve(bound: Bound, settings: Settings) -> int | float | None:
    return getattr(settings, bound) if isinstance(bound, str) else bound


@dataclass(frozen=True)
class Command:
    """A command's name (``table-diff``), its help, and its options in CLI order."""

    name: str
    help: str
    options: tuple[Option, ...]
    route: str = ""  # the REST path when it is not /<name> (/mtree/build)
    cli: tuple[str, ...] = ()  # the CLI's words when they are not the name (mtree, build)

    @property
    def path(self) -> str:
        """The command's REST path below /ace."""
        return self.route or f"/{self.name}"

    @property
    def cli_words(self) -> tuple[str, ...]:
        """What follows ``ace`` on the command line to name this command."""
        return self.cli or (self.name,)

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def label(self, name: str, style: Style) -> str:
        """An option's name as the user wrote it, for messages about rules that span options."""
        return self.option(name).label(style)

    def describe(self, opt: Option, style: Style) -> str:
        """``opt``'s help, other options in it (``{insert_only}``) named as ``style`` writes them."""
        return opt.help.format(**{o.name: o.label(style) for o in self.options})

    @property
    def api_options(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.api)


def show(value: Any) -> str:
    """A number as a user wrote it: 0 for 0.0 (a query string or a shell cannot tell)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_bool(name: str, value: Any) -> bool:
    """Accept ``true/false``, ``True/False``, ``1/0``, ``yes/no``, ``on/off``; none is false."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadOptionError(f"{name} must be true or false, not {value!r}.")


def _parse_int(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise BadOptionError(f"{name} must be a whole number, not {value!r}.") from None


def _parse_number(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise BadOptionError(f"{name} must be a number, not {value!r}.")
    return number


def _check_bounds(opt: Option, name: str, number: float, settings: Settings) -> None:
    low, high = opt.bounds(settings)
    too_low = low is not None and (number <= low if opt.low_exclusive else number < low)
    if not too_low and (high is None or number <= high):
        return
    parts = []
    if low is not None:
        parts.append(f"{'greater than' if opt.low_exclusive else 'at least'} {show(low)}")
    if high is not None:
        parts.append(f"at most {show(high)}")
    raise BadOptionError(f"{name} must be {' and '.join(parts)}; got {show(number)}.")


def choice_words(choices: tuple[str, ...]) -> str:
    """``a or b``; ``one of a, b, c``."""
    if len(choices) == 2:
        return f"{choices[0]} or {choices[1]}"
    return "one of " + ", ".join(choices)


def _parse_text(name: str, value: Any) -> str | None:
    if not isinstance(value, str):
        raise BadOptionError(f"{name} must be text, not {value!r}.")
    return value.strip() or None


def read_option(opt: Option, value: Any, settings: Settings, style: Style = "api") -> Any:
    """One option's value, checked and typed; its default when not given (``None`` or blank).

    An option whose default means "ACE chooses" (see :attr:`Option.automatic`) reads as
    ``None`` when not given.
    """
    name = opt.label(style)
    if isinstance(value, str) and not value.strip() and opt.kind != TEXT:
        value = None
    if opt.kind == BOOL:
        return parse_bool(name, value) if value is not None else opt.default_in(settings)
    if value is not None and opt.kind == TEXT:
        value = _parse_text(name, value)
    if value is not None and opt.kind == OBJECT:
        if style == "cli" and isinstance(value, str):
            return _parse_text(name, value)  # a file's path, read by the command's core
        if not isinstance(value, dict):
            raise BadOptionError(f"{name} must be a JSON object, not {type(value).__name__}.")
        return value
    if value is None:
        if opt.required:
            raise BadOptionError(f"{name} is required{opt.required_hint}.")
        return opt.shown_default(settings)  # none where ACE chooses, so reading again is a no-op
    if opt.kind == INT:
        number: int | float = _parse_int(name, value)
    elif opt.kind == NUMBER:
        number = _parse_number(name, value)
    elif opt.kind == CHOICE:
        text = str(value).strip().lower()
        if text not in opt.choices:
            raise BadOptionError(f"{name} must be {choice_words(opt.choices)}; got {value!r}.")
        return text
    else:
        return value
    _check_bounds(opt, name, number, settings)
    return number


def read_options(command: Command, raw: Mapping[str, Any], settings: Settings,
                 style: Style = "api") -> dict[str, Any]:
    """Every declared option of ``command`` read from ``raw``, in order; the first bad one raises.

    Keys ``raw`` has beyond the declaration (``role``, set by the API) are left to the caller.
    """
    return {opt.name: read_option(opt, raw.get(opt.name), settings, style)
            for opt in command.options}


# Options several commands share, declared once.
CLUSTER_NAME = Option("cluster_name", TEXT, "Name of the cluster.", required=True,
                      positional=True)
TABLE_NAME = Option("table_name", TEXT, "Fully qualified table name (schema.table).",
                    required=True, required_hint=", written as schema.table", positional=True)
QUIET = Option("quiet", BOOL, "Print only the result.")
NO_WAIT = Option("no_wait", BOOL, "With a fleet: print the task id and return at once.",
                 api=False)
# every command of the CLI has it (added by ace_api/cli/options.py); the API answers JSON anyway
JSON = Option("json", BOOL, "Print the result as one JSON document (for machines) instead of "
              "sentences.", api=False)
DIFF_FILE = Option(
    "diff_file", TEXT,
    "The diff file written by table-diff. Through the API: a path inside the ACE output "
    "directory (relative to it or absolute), or the task id of a completed table-diff.",
    required=True, required_hint=": the path of a diff file from table-diff")


def dbname_option(automatic: str) -> Option:
    """``dbname``, whose default depends on the command."""
    return Option("dbname", TEXT, "Database name.", automatic=automatic)
