"""The locks pin what pyproject.toml allows, and this environment is what the lock names.

A fresh machine installs ``requirements.lock`` (``deploy/setup.sh``) and the image
``requirements-runtime.lock`` (``Dockerfile``); a range changed in
``pyproject.toml`` without ``bash deploy/lock.sh`` would make them disagree.
"""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$", re.M)


def _pins(lock: str) -> dict[str, tuple[str, str | None]]:
    """Package -> (version, marker) for the pins of ``lock`` that apply to this Python."""
    pins: dict[str, tuple[str, str | None]] = {}
    for name, ver, marker in _PIN.findall((REPO / lock).read_text()):
        if not marker or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = (ver, marker or None)
    return pins


def _declared(runtime_only: bool = False) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = [] if runtime_only else project["optional-dependencies"]["dev"]
    return [Requirement(r) for r in [*project["dependencies"], *dev]]


def test_every_declared_package_is_locked_within_its_range() -> None:
    pins = _pins("requirements.lock")
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run bash deploy/lock.sh"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name][0]}, outside {req.specifier}: "
            "run bash deploy/lock.sh")


def test_every_pin_carries_a_hash() -> None:
    for lock in ("requirements.lock", "requirements-runtime.lock"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (REPO / lock).read_text())
        for block in blocks:
            if "==" in block.split("\n", 1)[0]:
                assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]} has no hash"


def test_the_image_lock_pins_the_versions_the_tests_ran_with() -> None:
    full, runtime = _pins("requirements.lock"), _pins("requirements-runtime.lock")
    runtime_names = {canonicalize_name(r.name) for r in _declared(runtime_only=True)}
    assert runtime_names <= set(runtime)
    for name, (ver, _) in runtime.items():
        assert full.get(name, (None,))[0] == ver, f"{name}: {ver} in the image, not in the tests"


@pytest.mark.skipif(os.environ.get("ACE_TEST_LATEST") == "1",
                    reason="deploy/test.sh --latest runs the newest versions on purpose")
def test_this_environment_is_the_lock() -> None:
    """What setup installed is exactly what the lock names (hash-checked by pip)."""
    wrong = []
    for name, (ver, _) in _pins("requirements.lock").items():
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "missing"
        if have != ver:
            wrong.append(f"{name} {have} (lock: {ver})")
    assert not wrong, "not the locked versions, run bash deploy/setup.sh: " + ", ".join(wrong)
