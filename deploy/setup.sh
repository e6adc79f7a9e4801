#!/usr/bin/env bash
# Set up everything ACE needs on one Debian 12 machine, then run a first diff.
#
#   bash deploy/setup.sh            packages (redis-server too), .venv, a 3-node demo cluster, demo diffs
#   bash deploy/setup.sh --no-demo  packages and .venv only (what the tests need)
#
# Safe to run again: every step checks first and skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEMO=1
QUIET=0
for arg in "$@"; do
  case "$arg" in
    --no-demo) DEMO=0 ;;
    -q|--quiet) QUIET=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { [[ $QUIET == 1 ]] || echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

SUDO=()
[[ $(id -u) == 0 ]] || SUDO=(sudo)

APT_UPDATED=0
apt_install() {
  # Installs Debian packages; apt-get update runs once, before the first install.
  if ((${#SUDO[@]})) && ! command -v sudo >/dev/null; then
    die "need root (or sudo) to install: $*"
  fi
  local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
  if [[ $APT_UPDATED == 0 ]]; then
    say "apt-get update"
    "${apt[@]}" update -qq
    APT_UPDATED=1
  fi
  say "installing $*"
  "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- system packages ----------------------------------------------------------------
missing=()
command -v python3 >/dev/null || missing+=(python3)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v runuser >/dev/null || missing+=(util-linux)
command -v openssl >/dev/null || missing+=(openssl)  # the demo cluster's certificates
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

# pglogical, for the newest server version installed (the one the demo and the tests run):
# the demo cluster replicates with it, and the checks' tests build a real replicating mesh
pg_major=$(basename "$(ls -d /usr/lib/postgresql/*/ | sort -V | tail -1)")
if [[ ! -e /usr/lib/postgresql/$pg_major/lib/pglogical.so ]]; then
  if ! apt_install "postgresql-${pg_major}-pglogical"; then
    [[ $DEMO == 0 ]] || die "postgresql-${pg_major}-pglogical did not install; the demo cluster replicates with it (run with --no-demo to skip the demo)"
    say "WARNING: pglogical did not install; the replication tests will fail"
  fi
fi

# Chromium renders the HTML diff report in the tests; setup itself can do without.
if ! command -v chromium >/dev/null; then
  apt_install chromium fonts-dejavu-core || say "WARNING: chromium did not install; the report tests will fail"
fi

# --- Redis (broker and result backend) ------------------------------------------------
# Only the server is installed here: deploy/fleet.sh runs the fleet's own Redis, with a
# password, and the tests start their own. Setup no longer starts one without a password.

# --- Python environment ---------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "python3 is $(python3 -V 2>&1); ACE needs 3.10 or newer"
  say "creating .venv"
  if ! python3 -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    python3 -m venv .venv
  fi
fi
# Packages come from requirements.lock, exact versions checked against their hashes,
# so this machine gets what CI tested; ACE itself is installed editable on top.
# The stamp ties the install to the lock, pyproject.toml and this checkout's path
# (an editable install points at the path it was made from).
stamp=$( (cat requirements.lock pyproject.toml; echo "$ROOT") | sha256sum | cut -d' ' -f1)
if [[ $(cat .venv/.ace-install-stamp 2>/dev/null) != "$stamp" || ! -x .venv/bin/ace ]]; then
  say "pip install -r requirements.lock, then ACE (a minute or two the first time)"
  pip=(.venv/bin/pip install -q --disable-pip-version-check)
  "${pip[@]}" --require-hashes --no-deps -r requirements.lock
  "${pip[@]}" --no-deps -e .
  echo "$stamp" > .venv/.ace-install-stamp
else
  say ".venv is up to date"
fi
# ACE's modules compiled now, as an installed (not editable) package is: a shell that sets
# PYTHONDONTWRITEBYTECODE would otherwise have every command compile them from source again
.venv/bin/python -m compileall -q -j 0 ace_api ace_shared ace_workers > /dev/null || true

if [[ $DEMO == 0 ]]; then
  say "done (no demo)"
  exit 0
fi

# --- demo cluster, data and first diffs -----------------------------------------------
say "starting the demo cluster (3 nodes on 127.0.0.1:6432-6434, replicating with pglogical)"
.venv/bin/python deploy/localcluster.py start --dir .ace-local --name demo --replication \
  --ports 6432,6433,6434 --timezones UTC,America/New_York,Asia/Kolkata --cluster-dir cluster \
  --admin-cluster-dir .ace-local/cluster-admin  # the superuser's, for 'ace mtree init' only
# API callers act as their own role: ACE's certificate may log in as demo_caller (docs/security.md)
.venv/bin/python deploy/localcluster.py serve-role --dir .ace-local --name demo \
  --role demo_caller --repair >/dev/null
say "loading demo data (demo_caller may read and repair it)"
.venv/bin/python deploy/demo_data.py --cluster-json cluster/demo/demo.json --grant-to demo_caller
# Each node was loaded on its own, its divergence included; only now do the tables join the
# replication set 'default' (without copying data), so the divergence stays for ACE to find.
say "replicating the demo tables (pglogical, set 'default', every node to every other)"
.venv/bin/python deploy/localcluster.py replicate --dir .ace-local --name demo \
  --tables 'public.customers,"Sales"."Order Items"' >/dev/null

export ACE_CLUSTER_DIR=$ROOT/cluster  # where the demo cluster's JSON was just written
export ACE_OUTPUT_DIR=${ACE_OUTPUT_DIR:-$ROOT/out}
mkdir -p "$ACE_OUTPUT_DIR"
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT

# table-diff exits 1 when it finds differences, which is what the demo expects.
run_diff() {
  say "ace table-diff demo $*"
  local rc=0
  .venv/bin/ace table-diff demo "$@" || rc=$?
  ((rc <= 1)) || die "ace table-diff demo $* failed (exit $rc)"
}
run_diff public.customers --output html
run_diff '"Sales"."Order Items"'

say "reports written:"
# Skip work/: it holds the per-task partial results, not reports.
find "$ACE_OUTPUT_DIR" -path "$ACE_OUTPUT_DIR/work" -prune -o -type f -newer "$marker" -print \
  | sort | sed 's/^/  /'
say "the demo cluster keeps running; stop it with: .venv/bin/python deploy/localcluster.py stop"
