"""The ``ace`` command line: the group, its error handling, and the commands it holds.

Exit codes follow diff(1) (:mod:`ace_api.cli.exits`). Each command is built from
its declaration in the core (:mod:`ace_shared.options`) by
:func:`~ace_api.cli.options.build_command`, so its options, defaults and bounds are
the API's; boolean options accept both ``--quiet`` and ``--quiet=True``, as the
original's examples use both. Without ``ACE_BROKER_URL`` the work runs in this
process; with it, on the Celery fleet.

Each command's module is imported only when that command runs (or ``ace --help``
lists it): a re-check that does 0.07 s of work should not wait for the declarations
and code of every other command to load first.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
from typing import Any, NoReturn

import click

from ace_api.cli.exits import EXIT_SAME, EXIT_TROUBLE, fail, settings_or_fail
from ace_api.cli.options import AceCommand
from ace_shared.errors import AceError
from ace_shared.outputs import keep_outputs_private

# command name -> (module, name of the click command in it), imported on first use
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "table-diff": ("ace_api.cli.diff", "table_diff"),
    "table-repair": ("ace_api.cli.repair", "table_repair"),
    "table-rerun": ("ace_api.cli.repair", "table_rerun"),
    "schema-diff": ("ace_api.cli.checks", "schema_diff"),
    "repset-diff": ("ace_api.cli.checks", "repset_diff"),
    "spock-diff": ("ace_api.cli.checks", "spock_diff"),
    "mtree": ("ace_api.cli.mtree", "mtree"),
    "cluster": ("ace_api.cli.cluster", "cluster"),
    "task-status": ("ace_api.cli.tasks", "task_status"),
    "diff-file": ("ace_api.cli.tasks", "diff_file"),
}

# click 8.2+ raises this for a bare group name; older versions print the help themselves
_NO_ARGS: tuple[type[click.ClickException], ...] = tuple(
    e for e in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if e is not None)


class AceGroup(click.Group):
    """Turns every :class:`AceError` into one line on stderr and exit code 2."""

    command_class = AceCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, its module imported now if it was not yet (:data:`LAZY_COMMANDS`)."""
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module, name = LAZY_COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), name), cmd_name)
        return self.commands.get(cmd_name)

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """Click's own complaints (an unknown option, a missing argument) get one line too.

        Click would print the usage, a hint and the error on four lines; here it is
        one ``ace: error:`` sentence that says where to look, and exit code 2.
        """
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as exc:  # plain "ace": the help, as click shows it
            click.echo(exc.format_message(), err=True)
            sys.exit(EXIT_TROUBLE)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "ace"
            message = exc.format_message()
            stop = "" if message.endswith((".", "?", "!")) else "."
            fail(f"{message}{stop} See '{where} --help'.")
        except click.ClickException as exc:
            fail(exc.format_message())
        except click.Abort:
            fail("interrupted.")
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AceError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted.")
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug, not bad input: still trouble (2), never "differences" (1)
            if os.environ.get("ACE_DEBUG"):
                raise
            fail(f"unexpected internal error: {exc!r} (set ACE_DEBUG=1 for a traceback).")


def package_version() -> str:
    """ACE's version, from the installed package's metadata."""
    import importlib.metadata  # only for --version: loading it slows every command's start
    try:
        return importlib.metadata.version("ace")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (ACE is not installed; run deploy/setup.sh)"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"ace {package_version()}")
    ctx.exit(EXIT_SAME)


@click.group("ace", cls=AceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Print ACE's version and exit.")
def main() -> None:
    """ACE, the Anti-Chaos Engine: find and repair data divergence between cluster nodes."""


def run() -> NoReturn:
    """The ``ace`` program: run a command, then leave without unloading every module.

    Tearing down the interpreter after a fleet command (Celery, kombu and SQLAlchemy
    loaded) takes a tenth of a second or more, every time, after the work is done.
    Exit handlers still run and both output streams are flushed; only the
    interpreter's own clean-up of module state is skipped.
    """
    keep_outputs_private()  # diffs and reports hold table data
    try:
        main(prog_name="ace")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): trouble, never "differences"
        click.echo(code, err=True)
        code = EXIT_TROUBLE
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code or 0)


@main.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=4, show_default=True, type=int,
              help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int,
              help="Threads per worker (gthread workers, keep-alive); 1 uses sync workers.")
def api(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the REST API over mutual TLS (client certificates required)."""
    from ace_api.rest.server import serve  # Flask and gunicorn load only for 'ace api'
    serve(settings_or_fail(), host=host, port=port, workers=workers, threads=threads)
