"""ACE settings: defaults, an optional ``ace_config.py``, then environment variables.

The names are those of the original ``ace_config.py`` (``MAX_ALLOWED_DIFFS``,
``BLOCK_ROWS_DEFAULT``, ``USE_CERT_AUTH``, ...) so an existing file keeps working.
Any setting can be overridden by an environment variable: ``ACE_<NAME>``, or the
name itself where it already starts with ``ACE_`` (``ACE_USER_CERT_FILE``).
Settings are read once per process and passed down explicitly, never looked up
from deep inside the core.
"""

from __future__ import annotations

import os
import runpy
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ace_shared.errors import ConfigError

TASKS_PER_SLOT = 4
"""Automatic batching cuts a diff into this many tasks for each worker process.

One task per range costs a broker round trip, a result write and task events for
every few thousand rows, which on a busy fleet is a fifth of the work; one task
per worker process leaves the whole fleet waiting for the slowest. A few tasks
each keep the per-task cost small, and tapering them (see
:func:`ace_shared.diff.ranges.tapered_sizes`) keeps the last ones short.
"""


@dataclass(frozen=True)
class Settings:
    """Every tunable ACE reads; see the module docstring for where values come from."""

    # table-diff
    BLOCK_ROWS_DEFAULT: int = 10000
    BLOCK_ROWS_MIN: int = 1000
    BLOCK_ROWS_MAX: int = 100000
    MAX_CPU_RATIO_DEFAULT: float = 0.6
    BATCH_SIZE_DEFAULT: int = 0  # 0: automatic (see DiffRequest.batch_size)
    BATCH_SIZE_MIN: int = 1
    BATCH_SIZE_MAX: int = 100000
    MAX_ALLOWED_DIFFS: int = 10000
    # mtree: rows per leaf block (small leaves: a re-check reads only the leaves that differ)
    MTREE_BLOCK_ROWS_DEFAULT: int = 100
    MTREE_BLOCK_ROWS_MIN: int = 50
    # where things live
    CLUSTER_DIR: str = "cluster"
    OUTPUT_DIR: str = "."
    # the fleet
    BROKER_URL: str = ""
    RESULT_BACKEND: str = ""
    DATABASE_URL: str = ""
    # where the fleet's hosts hand each other files (ace_shared/tasks/filestore.py): "" (the
    # database when DATABASE_URL is PostgreSQL, else local), local, database, s3://bucket/prefix
    SHARED_STORE: str = ""
    # work folders and results older than this are removed by the beat job (0: kept forever)
    RESULT_RETENTION_DAYS: int = 30
    TASK_TIME_LIMIT: int = 6 * 3600
    RESULT_EXPIRES: int = 24 * 3600
    MAX_REDELIVERIES: int = 3
    TASKS_PER_WORKER_PROCESS: int = TASKS_PER_SLOT  # a diff without --batch-size, on a fleet
    # The secret every task message is signed with (docs/security.md): a file holding it
    # (preferred), or the key itself. Only ACE's own processes may hold it.
    TASK_SIGNING_KEY_FILE: str = ""
    TASK_SIGNING_KEY: str = ""
    # connections
    CONNECT_TIMEOUT: int = 10
    # The most connections the whole fleet opens to one node (host and port) at once, counted
    # across hosts in Redis; a job waits for one to come free, up to CONNECTION_WAIT_SECONDS.
    # 0: no cap. The CLI in-process and the API are not counted (docs/fleet.md).
    MAX_CONNECTIONS_PER_NODE: int = 16
    CONNECTION_WAIT_SECONDS: int = 900
    # No statement may run for hours: per-range hashes take seconds, the longest single
    # statements (a repair's upsert, a planning scan) minutes; 15 minutes bounds a runaway
    # filter or function without cutting legitimate work. 0 turns a limit off.
    STATEMENT_TIMEOUT_MS: int = 15 * 60 * 1000
    # Sessions that log in as an API caller: shorter, so one caller's heavy filter or table
    # cannot hold a node or a worker for the operator's quarter of an hour (0: STATEMENT_TIMEOUT_MS).
    CALLER_STATEMENT_TIMEOUT_MS: int = 5 * 60 * 1000
    # A repair waiting a minute for an application's row lock should fail, not queue forever.
    LOCK_TIMEOUT_MS: int = 60 * 1000
    # A repair's transaction waits idle while the other nodes prepare; bounded by two
    # statement timeouts so an abandoned transaction cannot hold its locks for long.
    IDLE_IN_TRANSACTION_TIMEOUT_MS: int = 30 * 60 * 1000
    # Password route: a libpq passfile with each served role's own password (see docs/security.md)
    ROLE_PASSFILE: str = ""
    # certificates
    USE_CERT_AUTH: bool = False
    ACE_USER_CERT_FILE: str = ""
    ACE_USER_KEY_FILE: str = ""
    CA_CERT_FILE: str = ""
    # the authority that signed the nodes' server certificates, when not CA_CERT_FILE's
    DB_CA_CERT_FILE: str = ""
    ACE_API_CERT_FILE: str = ""
    ACE_API_KEY_FILE: str = ""
    CA_CRL_FILE: str = ""  # revoked client certificates (PEM CRL from the CA); "" for none
    # API access: common names, separated by commas or spaces
    API_ADMIN_CNS: str = ""  # see every task, scheduled ones included
    API_METRICS_CNS: str = ""  # besides the admins, may read /metrics (a Prometheus scraper)
    API_ALLOWED_CNS: str = ""  # "" serves every certificate the CA issued
    # how long the API remembers whether a certificate's role may be served (checked on
    # every node: a member of ace_callers without SUPERUSER, BYPASSRLS, CREATEROLE, REPLICATION)
    API_ROLE_CHECK_SECONDS: int = 30
    # per caller (certificate): submissions, e.g. "60/minute" or "10/second;500/hour" ("" for
    # none), counted in API_RATE_LIMIT_STORAGE ("" for the broker's Redis); tasks running and
    # tasks waiting at once (0 for no limit)
    API_RATE_LIMIT: str = "60/minute"
    API_RATE_LIMIT_STORAGE: str = ""
    API_MAX_ACTIVE_TASKS_PER_CALLER: int = 8
    API_MAX_QUEUED_TASKS_PER_CALLER: int = 32
    # scheduling and auto-repair
    MIN_RUN_FREQUENCY: str = "5m"
    schedule_jobs: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    schedule_config: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    auto_repair_config: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.OUTPUT_DIR).resolve()

    @property
    def cluster_dir(self) -> Path:
        return Path(self.CLUSTER_DIR).resolve()

    def with_overrides(self, **values: Any) -> Settings:
        return replace(self, **values)


_ENV_ALIASES = {
    "CLUSTER_DIR": "ACE_CLUSTER_DIR",
    "OUTPUT_DIR": "ACE_OUTPUT_DIR",
    "BROKER_URL": "ACE_BROKER_URL",
    "RESULT_BACKEND": "ACE_RESULT_BACKEND",
    "DATABASE_URL": "ACE_DATABASE_URL",
}


def _env_name(name: str) -> str:
    if name in _ENV_ALIASES:
        return _ENV_ALIASES[name]
    return name if name.startswith("ACE_") else f"ACE_{name}"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Turn a value from a file or the environment into the type of its default."""
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, str):
            if isinstance(raw, (list, tuple, set, frozenset)):  # API_ADMIN_CNS = ["a", "b"]
                return ",".join(str(item) for item in raw)
            return str(raw)
        if isinstance(default, tuple):
            return tuple(raw)
        if isinstance(default, dict):
            return dict(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Setting {name} has the invalid value {raw!r}.") from exc
    return raw


def load_settings(config_path: str | os.PathLike[str] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Build settings from defaults, the config file (``$ACE_CONFIG``), then the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_path or env.get("ACE_CONFIG")
    defaults = Settings()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"The ACE config file {p} does not exist; fix ACE_CONFIG or create it.")
        try:
            namespace = runpy.run_path(str(p))
        except Exception as exc:  # a config file is user code: report, don't crash
            raise ConfigError(f"The ACE config file {p} could not be loaded: {exc}.") from exc
        for f in fields(Settings):
            if f.name in namespace:
                values[f.name] = _coerce(f.name, namespace[f.name], getattr(defaults, f.name))
    for f in fields(Settings):
        env_name = _env_name(f.name)
        if env_name in env and not isinstance(getattr(defaults, f.name), (tuple, dict)):
            values[f.name] = _coerce(env_name, env[env_name], getattr(defaults, f.name))
    return replace(defaults, **values)
