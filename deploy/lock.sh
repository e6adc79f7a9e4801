#!/usr/bin/env bash
# Refresh the locks: the newest versions that pyproject.toml's ranges allow, each
# pinned with its hashes, for every Python from 3.10 on.
#
#   bash deploy/lock.sh          rewrite requirements.lock and requirements-runtime.lock
#
# deploy/setup.sh (and so the tests and CI) installs exactly what requirements.lock
# names; the Dockerfile installs requirements-runtime.lock, the same versions without
# the dev tools.
# Refresh it when `bash deploy/test.sh --latest` passes, and commit both together.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=.venv/bin/uv
[[ -x $uv ]] || { echo "lock: no $uv; run 'bash deploy/setup.sh --no-demo' first" >&2; exit 2; }
"$uv" pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
  --generate-hashes --quiet --custom-compile-command "bash deploy/lock.sh" \
  --output-file requirements.lock
# the image's lock: the runtime packages only, at the versions the tests ran with
"$uv" pip compile pyproject.toml --universal --python-version 3.10 \
  --generate-hashes --quiet --custom-compile-command "bash deploy/lock.sh" \
  --constraint requirements.lock --output-file requirements-runtime.lock
echo "lock: requirements.lock has $(grep -c '==' requirements.lock) packages," \
  "requirements-runtime.lock $(grep -c '==' requirements-runtime.lock)"
