"""Settings come from defaults, then ``ace_config.py``, then the environment.

An operator who already has the original tool's ``ace_config.py`` must be able to
keep it; an environment variable must win over the file, so containers can
override one value without editing files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ace_shared.config import Settings, load_settings
from ace_shared.errors import ConfigError

CONFIG_FILE = """
MAX_ALLOWED_DIFFS = 1234
BLOCK_ROWS_DEFAULT = 5000
MAX_CPU_RATIO_DEFAULT = 0.25
USE_CERT_AUTH = True
ACE_USER_CERT_FILE = "/certs/ace.crt"
schedule_jobs = [{"name": "t1", "cluster_name": "c", "table_name": "public.t1"}]
auto_repair_config = {"enabled": False, "cluster_name": "c"}
SOMETHING_ELSE = "ignored"
"""


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "ace_config.py"
    path.write_text(CONFIG_FILE)
    return path


def test_defaults_match_the_documented_ones() -> None:
    s = load_settings(environ={})
    assert (s.BLOCK_ROWS_DEFAULT, s.BLOCK_ROWS_MIN, s.BLOCK_ROWS_MAX) == (10000, 1000, 100000)
    assert s.MAX_CPU_RATIO_DEFAULT == 0.6
    assert s.BATCH_SIZE_DEFAULT == 0  # automatic
    assert s == Settings()


def test_values_come_from_the_config_file(config_file: Path) -> None:
    s = load_settings(config_file, environ={})
    assert s.MAX_ALLOWED_DIFFS == 1234
    assert s.BLOCK_ROWS_DEFAULT == 5000
    assert s.MAX_CPU_RATIO_DEFAULT == 0.25
    assert s.USE_CERT_AUTH is True
    assert s.ACE_USER_CERT_FILE == "/certs/ace.crt"
    assert s.schedule_jobs[0]["table_name"] == "public.t1"
    assert s.auto_repair_config["cluster_name"] == "c"
    assert s.BLOCK_ROWS_MAX == 100000, "settings the file leaves out keep their default"


def test_ace_config_env_names_the_file(config_file: Path) -> None:
    s = load_settings(environ={"ACE_CONFIG": str(config_file)})
    assert s.MAX_ALLOWED_DIFFS == 1234


def test_environment_overrides_the_file(config_file: Path, tmp_path: Path) -> None:
    env = {
        "ACE_MAX_ALLOWED_DIFFS": "5",
        "ACE_USE_CERT_AUTH": "false",
        "ACE_USER_CERT_FILE": "/other.crt",
        "ACE_CLUSTER_DIR": str(tmp_path / "clusters"),
        "ACE_OUTPUT_DIR": str(tmp_path / "out"),
        "ACE_MAX_CPU_RATIO_DEFAULT": "0.9",
    }
    s = load_settings(config_file, environ=env)
    assert s.MAX_ALLOWED_DIFFS == 5
    assert s.USE_CERT_AUTH is False
    assert s.ACE_USER_CERT_FILE == "/other.crt"
    assert s.cluster_dir == (tmp_path / "clusters").resolve()
    assert s.output_dir == (tmp_path / "out").resolve()
    assert s.MAX_CPU_RATIO_DEFAULT == 0.9
    assert s.BLOCK_ROWS_DEFAULT == 5000


@pytest.mark.parametrize("word", ["1", "true", "YES", "on"])
def test_boolean_environment_spellings(word: str) -> None:
    assert load_settings(environ={"ACE_USE_CERT_AUTH": word}).USE_CERT_AUTH is True


def test_a_missing_config_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(missing, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"ACE_CONFIG": str(missing)})


def test_a_broken_config_file_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "ace_config.py"
    path.write_text("MAX_ALLOWED_DIFFS = = 3\n")
    with pytest.raises(ConfigError, match="could not be loaded"):
        load_settings(path, environ={})


@pytest.mark.parametrize(("env", "name"), [
    ({"ACE_MAX_ALLOWED_DIFFS": "lots"}, "ACE_MAX_ALLOWED_DIFFS"),
    ({"ACE_USE_CERT_AUTH": "maybe"}, "ACE_USE_CERT_AUTH"),
    ({"ACE_MAX_CPU_RATIO_DEFAULT": "half"}, "ACE_MAX_CPU_RATIO_DEFAULT"),
])
def test_bad_environment_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ=env)


def test_bad_file_value_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "ace_config.py"
    path.write_text("BLOCK_ROWS_DEFAULT = 'many'\n")
    with pytest.raises(ConfigError, match="BLOCK_ROWS_DEFAULT"):
        load_settings(path, environ={})
