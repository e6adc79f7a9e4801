#!/usr/bin/env bash
# Run the test suite: set the machine up (packages, Redis, .venv), then pytest.
#
#   bash deploy/test.sh [pytest arguments]
#
# The tests start their own PostgreSQL nodes on free ports, so no demo cluster is
# needed. pytest's exit code is passed through unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p .ace-local
log=.ace-local/setup.log
if ! bash deploy/setup.sh --no-demo --quiet >"$log" 2>&1; then
  cat "$log" >&2
  echo "test: setup failed (log above, also in $log)" >&2
  exit 1
fi
exec .venv/bin/pytest -q "$@"
