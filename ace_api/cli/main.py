"""The ``ace`` command line.

Exit codes follow diff(1): 0 when the nodes agree, 1 when they differ, 2 on
any trouble. Boolean options accept both ``--quiet`` and ``--quiet=True``
spellings, as the original's examples use both. Without ``ACE_BROKER_URL``
the work runs in this process; with it, on the Celery fleet.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from ace_shared.config import Settings, load_settings
from ace_shared.diff.request import parse_bool
from ace_shared.errors import AceError
from ace_shared.outputs import keep_outputs_private

EXIT_SAME, EXIT_DIFF, EXIT_TROUBLE = 0, 1, 2


class BoolOption(click.Option):
    """A boolean option, written ``--name`` or ``--name=VALUE`` (see :class:`AceCommand`)."""


def bool_option(name: str, help_text: str) -> Callable[[Any], Any]:
    """``--name`` alone means true; ``--name=False`` is accepted too."""
    return click.option(name, cls=BoolOption, is_flag=False, flag_value="true", default="false",
                        metavar="[=BOOL]", help=help_text)


class AceCommand(click.Command):
    """Reads a bare boolean ``--name`` as ``--name=true``.

    A value-taking option would otherwise swallow the next word, so that
    ``ace table-diff --quiet mycluster public.t`` read ``mycluster`` as the
    value of ``--quiet``; a value is only ever taken after ``=``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {o for p in self.params if isinstance(p, BoolOption) for o in p.opts}
        rewritten: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                rewritten.extend(args[i:])
                break
            rewritten.append(f"{arg}=true" if arg in names else arg)
        return super().parse_args(ctx, rewritten)


def fail(message: str) -> None:
    click.echo(f"ace: error: {message}", err=True)
    sys.exit(EXIT_TROUBLE)


def settings_or_fail() -> Settings:
    try:
        return load_settings()
    except AceError as exc:
        fail(str(exc))
        raise


# click 8.2+ raises this for a bare group name; older versions print the help themselves
_NO_ARGS: tuple[type[Exception], ...] = tuple(
    e for e in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if e is not None)


class AceGroup(click.Group):
    """Turns every :class:`AceError` into one line on stderr and exit code 2."""

    command_class = AceCommand

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


@click.group("ace", cls=AceGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code or 0)


@main.command("table-diff")
@click.argument("cluster_name")
@click.argument("table_name")
@click.option("--dbname", default=None, help="Database name (default: the cluster's first).")
@click.option("--block-rows", "block_rows", default=None, help="Rows per block (1000-100000).")
@click.option("--max-cpu-ratio", "max_cpu_ratio", default=None,
              help="Share of this machine's CPUs to use (0-1].")
@click.option("--output", default="json", help="json, csv or html.")
@click.option("--nodes", default="all", help="'all' or a comma-separated list of nodes.")
@click.option("--batch-size", "batch_size", default=None,
              help="Blocks per worker task (default: chosen for the fleet's size).")
@bool_option("--quiet", "Print only the result.")
@click.option("--table-filter", "table_filter", default=None,
              help="SQL WHERE condition restricting the rows compared (runs read-only).")
@bool_option("--no-wait", "With a fleet: print the task id and return at once.")
def table_diff(**opts: Any) -> None:
    """Compare a table across the nodes of a cluster."""
    from ace_api.cli.diff import run_table_diff_command
    settings = settings_or_fail()
    opts["quiet"] = parse_bool("--quiet", opts["quiet"])
    opts["no_wait"] = parse_bool("--no-wait", opts["no_wait"])
    sys.exit(run_table_diff_command(opts, settings))


@main.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=4, show_default=True, type=int,
              help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int,
              help="Threads per worker (gthread workers, keep-alive); 1 uses sync workers.")
def api(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the REST API over mutual TLS (client certificates required)."""
    from ace_api.rest.server import serve
    serve(settings_or_fail(), host=host, port=port, workers=workers, threads=threads)


def print_json(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


from ace_api.cli import repair  # noqa: E402,F401
