"""The CLI and the API take the same options: one declaration builds both, and the core's checks.

For every option a command declares, ``ace <command> --help`` and the OpenAPI
document show the same type, default and bounds, read from the settings in
force; a bad value gets the same sentence from both, with the option named as
the user wrote it (``--block-rows`` on the command line, ``block_rows`` in a
request).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from client_helpers import api_client, as_caller
from diff_helpers import assert_one_error_line, run_ace

from ace_api.cli.main import main
from ace_api.rest.resources import SUBMISSIONS
from ace_shared.config import Settings
from ace_shared.errors import BadOptionError
from ace_shared.options import BOOL, CHOICE, INT, NUMBER, OBJECT, Command, Option
from ace_shared.repair.request import check_repair_options

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [command for command, _ in SUBMISSIONS]
ENV = {"ACE_BLOCK_ROWS_DEFAULT": "5000", "ACE_BLOCK_ROWS_MAX": "50000",
       "ACE_MAX_CPU_RATIO_DEFAULT": "0.25"}
SETTINGS = Settings(BLOCK_ROWS_DEFAULT=5000, BLOCK_ROWS_MAX=50000, MAX_CPU_RATIO_DEFAULT=0.25)
JSON_TYPES = {BOOL: "boolean", INT: "integer", NUMBER: "number", CHOICE: "string",
              OBJECT: "object"}
CLI_TYPES = {BOOL: "[=BOOL]", INT: "INTEGER", NUMBER: "FLOAT", OBJECT: "FILE"}


def api_get(settings: Settings, path: str, **kwargs: Any) -> Any:
    return api_client(settings).get(path, environ_base=as_caller(), **kwargs)


def swagger(settings: Settings) -> dict[str, Any]:
    response = api_get(settings, "/ace/swagger.json")
    assert response.status_code == 200
    return response.json


def help_lines(words: tuple[str, ...], env: dict[str, str]) -> dict[str, str]:
    """``--name`` -> its whole help entry, as ``ace <command> --help`` prints it."""
    result = CliRunner(env=env).invoke(main, [*words, "--help"])
    assert result.exit_code == 0, result.output
    entries: dict[str, str] = {}
    current = None
    for line in result.output.splitlines():
        match = re.match(r"\s+(--[a-z-]+)\s*(.*)", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2)
        elif current and line.startswith(" " * 10):
            entries[current] += " " + line.strip()
    return {name: re.sub(r"\s+", " ", text) for name, text in entries.items()}


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def expected_cli_extras(prop: dict[str, Any], opt: Option) -> list[str]:
    """What the CLI must show, worked out from the OpenAPI property alone."""
    extras = []
    if "default" in prop:
        default = prop["default"]
        extras.append("default: " + (str(default).lower() if isinstance(default, bool)
                                     else number_text(default) if prop.get("type") in
                                     ("integer", "number") else str(default)))
    if "minimum" in prop or "maximum" in prop:
        low = "" if "minimum" not in prop else (
            number_text(prop["minimum"]) + ("<" if prop.get("exclusiveMinimum") else "<="))
        high = "" if "maximum" not in prop else "<=" + number_text(prop["maximum"])
        extras.append(f"{low}x{high}")
    return extras


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_cli_and_api_show_the_same_options_defaults_and_bounds(command: Command) -> None:
    model = swagger(SETTINGS)["definitions"]
    props = model["".join(p.title() for p in command.name.split("-")) + "Request"]["properties"]
    helps = help_lines(command.cli_words, ENV)
    api_names = {o.name for o in command.options if o.api}
    # every command of the CLI also has --json (how it prints, not what it does)
    cli_names = {o.label("cli") for o in command.options if not o.positional} | {"--json"}
    assert set(props) == api_names
    assert set(helps) == cli_names
    for opt in command.options:
        if not opt.api:
            continue
        prop = props[opt.name]
        assert prop.get("type") == JSON_TYPES.get(opt.kind, "string"), opt.name
        assert prop.get("default") == opt.shown_default(SETTINGS), opt.name
        assert (prop.get("minimum"), prop.get("maximum")) == opt.bounds(SETTINGS), opt.name
        assert prop.get("enum", []) == list(opt.choices), opt.name
        if opt.positional:
            continue
        entry = helps[opt.label("cli")]
        kind = "[" + "|".join(opt.choices) + "]" if opt.kind == CHOICE else \
            CLI_TYPES.get(opt.kind, "TEXT")
        assert entry.startswith(kind), (opt.name, entry)
        for extra in expected_cli_extras(prop, opt):
            assert extra in entry, (opt.name, extra, entry)


def test_defaults_and_bounds_come_from_the_settings() -> None:
    helps = help_lines(("table-diff",), ENV)
    assert "[default: 5000; 1000<=x<=50000]" in helps["--block-rows"]
    assert "[default: 0.25; 0<x<=1]" in helps["--max-cpu-ratio"]
    assert "[default: chosen for the fleet's size; 1<=x<=100000]" in helps["--batch-size"]
    assert "[default: false]" in helps["--quiet"]
    props = swagger(SETTINGS)["definitions"]["TableDiffRequest"]["properties"]
    assert props["block_rows"]["default"] == 5000 and props["block_rows"]["maximum"] == 50000
    assert props["max_cpu_ratio"]["default"] == 0.25
    assert "default" not in props["batch_size"]


def test_help_names_the_other_options_as_each_door_writes_them() -> None:
    helps = help_lines(("table-repair",), {})
    assert "With --insert-only:" in helps["--bidirectional"]
    props = swagger(Settings())["definitions"]["TableRepairRequest"]["properties"]
    assert props["bidirectional"]["description"].startswith("With insert_only:")


def test_version_is_the_installed_package_version() -> None:
    run = subprocess.run([sys.executable, "-m", "ace_api", "--version"], capture_output=True,
                         text=True, cwd=REPO_ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"ace {importlib.metadata.version('ace')}"


@pytest.mark.parametrize(("cli_args", "query", "cli_error", "api_error"), [
    (["--block-rows=lots"], {"block_rows": "lots"},
     "--block-rows must be a whole number, not 'lots'.",
     "block_rows must be a whole number, not 'lots'."),
    (["--block-rows", "999"], {"block_rows": "999"},
     "--block-rows must be at least 1000 and at most 100000; got 999.",
     "block_rows must be at least 1000 and at most 100000; got 999."),
    (["--max-cpu-ratio=0"], {"max_cpu_ratio": "0"},
     "--max-cpu-ratio must be greater than 0 and at most 1; got 0.",
     "max_cpu_ratio must be greater than 0 and at most 1; got 0."),
])
def test_a_bad_value_is_named_as_the_user_wrote_it(cli_args: list[str], query: dict[str, str],
                                                   cli_error: str, api_error: str) -> None:
    run = run_ace("table-diff", "nocluster", "public.t", *cli_args)
    assert_one_error_line(run, cli_error)
    assert run.stderr.strip() == f"ace: error: {cli_error}"
    response = api_get(Settings(), "/ace/table-diff", query_string={
        "cluster_name": "nocluster", "table_name": "public.t", **query})
    assert response.status_code == 400 and response.json == {"error": api_error}


def test_rules_between_options_name_them_as_written_too() -> None:
    raw = {"cluster_name": "c", "table_name": "public.t", "diff_file": "/x.json",
           "source_of_truth": "n1", "upsert_only": True, "insert_only": True}
    with pytest.raises(BadOptionError, match="^upsert_only and insert_only exclude"):
        check_repair_options(raw)
    with pytest.raises(BadOptionError, match="^--upsert-only and --insert-only exclude"):
        check_repair_options(raw, "cli")
    run = run_ace("table-repair", "nocluster", "public.t", "--diff-file=/x.json",
                  "--source-of-truth=n1", "--dry-run", "--quiet=maybe")
    assert_one_error_line(run, "--quiet must be true or false, not 'maybe'.")


def test_a_missing_word_is_named_as_the_usage_line_names_it() -> None:
    run = run_ace("table-diff", "nocluster", "  ")
    assert_one_error_line(run, "TABLE_NAME is required, written as schema.table.")


def test_each_endpoint_and_command_have_the_same_summary() -> None:
    paths = swagger(Settings())["paths"]
    for command in COMMANDS:
        for method in ("get", "post"):
            assert paths[command.path][method]["summary"] == command.help.rstrip(".")
        result = CliRunner().invoke(main, [*command.cli_words[:-1], "--help"])
        assert command.cli_words[-1] in result.output
