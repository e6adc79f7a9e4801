#!/usr/bin/env bash
# Run the test suite: set the machine up (packages, Redis, .venv), then pytest.
#
#   bash deploy/test.sh [pytest arguments]            with the locked versions (what CI runs)
#   bash deploy/test.sh --latest [pytest arguments]   with the newest versions pyproject.toml
#                                                     allows, in a scratch venv
#
# --latest shows the next break coming: when it passes, refresh the lock with
# `bash deploy/lock.sh` and commit requirements.lock. The tests start their own
# PostgreSQL nodes on free ports, so no demo cluster is needed. pytest's exit code
# is passed through unchanged.
#
# The tests run in two processes (pytest-xdist), a test file's tests all in the same one:
# most of the suite's time is spent waiting on servers, workers and timeouts, and each
# process starts clusters and fleets of its own. ACE_TEST_PROCESSES=1 runs them in one;
# `-n 0` among the arguments does too.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
LATEST=0
if [[ ${1:-} == --latest ]]; then LATEST=1; shift; fi

mkdir -p .ace-local
log=.ace-local/setup.log
if ! bash deploy/setup.sh --no-demo --quiet >"$log" 2>&1; then
  cat "$log" >&2
  echo "test: setup failed (log above, also in $log)" >&2
  exit 1
fi

if [[ $LATEST == 1 ]]; then
  VENV=.ace-local/venv-latest
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  echo "test: installing the newest allowed versions into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade -e '.[dev]'
  # what differs from the lock (for this Python), so a failure can be traced to a release
  "$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import distributions
from packaging.markers import Marker
from packaging.utils import canonicalize_name as norm
pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$",
                  open("requirements.lock").read(), re.M)
locked = {norm(n): v for n, v, marker in pins if not marker or Marker(marker).evaluate()}
other = sorted(f"{norm(d.metadata['Name'])} {locked[norm(d.metadata['Name'])]} -> {d.version}"
               for d in distributions()
               if locked.get(norm(d.metadata["Name"]), d.version) != d.version)
print("test: versions other than requirements.lock's: " + (", ".join(other) or "none"))
PY
fi
[[ $LATEST == 0 ]] || export ACE_TEST_LATEST=1
processes=${ACE_TEST_PROCESSES:-2}
parallel=()
[[ $processes -gt 1 ]] && parallel=(-n "$processes" --dist loadfile)
exec "$VENV/bin/pytest" -q "${parallel[@]}" "$@"
