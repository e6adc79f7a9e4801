#!/usr/bin/env bash
# Run ACE's services on this machine without Docker: Celery workers, beat, Flower and the API.
#
#   bash deploy/fleet.sh start [--workers 2] [--concurrency 2]
#   bash deploy/fleet.sh status
#   bash deploy/fleet.sh stop
#
# Each service runs in the background in its own process group; pid files and logs
# are in .ace-local/fleet/. Run deploy/setup.sh first (Redis, .venv). Settings come
# from the ACE_* variables below; set any of them beforehand to override.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FLEET=$ROOT/.ace-local/fleet
BIN=$ROOT/.venv/bin

export ACE_BROKER_URL=${ACE_BROKER_URL:-redis://127.0.0.1:6379/0}
export ACE_RESULT_BACKEND=${ACE_RESULT_BACKEND:-redis://127.0.0.1:6379/1}
export ACE_CLUSTER_DIR=${ACE_CLUSTER_DIR:-$ROOT/cluster}
export ACE_OUTPUT_DIR=${ACE_OUTPUT_DIR:-$ROOT/out}
# The task store where ACE keeps it by default: ace_tasks.db in the output directory.
export ACE_DATABASE_URL=${ACE_DATABASE_URL:-sqlite:///$ACE_OUTPUT_DIR/ace_tasks.db}
# Workers log in as API callers with ACE's certificate (docs/security.md): the demo cluster
# made by deploy/setup.sh keeps its certificate authority and ACE's client certificate here.
DEMO_TLS=$ROOT/.ace-local/demo/tls
if [[ -f $DEMO_TLS/ace-client.crt && -z ${ACE_USER_CERT_FILE:-} ]]; then
  export ACE_USE_CERT_AUTH=1 ACE_USER_CERT_FILE=$DEMO_TLS/ace-client.crt
  export ACE_USER_KEY_FILE=$DEMO_TLS/ace-client.key
  export ACE_DB_CA_CERT_FILE=${ACE_DB_CA_CERT_FILE:-$DEMO_TLS/ca.crt}
fi
# The API serves mutual TLS only; like docker-compose.yml, take its files from ./certs.
if [[ -f $ROOT/certs/server.crt ]]; then
  export ACE_API_CERT_FILE=${ACE_API_CERT_FILE:-$ROOT/certs/server.crt}
  export ACE_API_KEY_FILE=${ACE_API_KEY_FILE:-$ROOT/certs/server.key}
  export ACE_CA_CERT_FILE=${ACE_CA_CERT_FILE:-$ROOT/certs/ca.crt}
  # deploy/certs.py writes the CA's revocation list beside it
  if [[ -f $ROOT/certs/ca.crl ]]; then
    export ACE_CA_CRL_FILE=${ACE_CA_CRL_FILE:-$ROOT/certs/ca.crl}
  fi
fi
API_HOST=${ACE_API_HOST:-127.0.0.1}
API_PORT=${ACE_API_PORT:-5000}
FLOWER_PORT=${ACE_FLOWER_PORT:-5555}

say() { echo "fleet: $*"; }
die() { echo "fleet: $*" >&2; exit 1; }

usage() { sed -n '2,6p' "$0"; }

command=${1:-}
[[ -n $command ]] || { usage; exit 2; }
shift
WORKERS=2
CONCURRENCY=2
while (($#)); do
  case "$1" in
    --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
    --workers=*) WORKERS=${1#*=}; shift ;;
    --concurrency) CONCURRENCY=${2:?--concurrency needs a number}; shift 2 ;;
    --concurrency=*) CONCURRENCY=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number"
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "--concurrency must be a positive number"

# Prints the pid of service $1 if it is running, else nothing (and drops a stale pid file).
live_pid() {
  local file=$FLEET/$1.pid pid
  [[ -f $file ]] || return 0
  pid=$(<"$file")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
      && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE 'celery|ace'; then
    echo "$pid"
  else
    rm -f "$file"
  fi
}

# launch NAME COMMAND...: start a service unless it already runs.
launch() {
  local name=$1 pid
  shift
  pid=$(live_pid "$name")
  if [[ -n $pid ]]; then
    say "$name already running (pid $pid)"
    return 0
  fi
  # setsid gives each service its own process group, so stop can end its children too.
  setsid "$@" >>"$FLEET/$name.log" 2>&1 </dev/null &
  echo $! >"$FLEET/$name.pid"
  say "$name started (pid $!, log .ace-local/fleet/$name.log)"
}

# Services in start order; workers are w1..wN.
services() {
  local n
  for n in $(seq "$WORKERS"); do echo "w$n"; done
  # Workers from an earlier start with more of them still need stopping.
  for f in "$FLEET"/w*.pid; do [[ -e $f ]] && basename "$f" .pid; done
  echo beat flower api
}

start() {
  [[ -x $BIN/celery ]] || die "no .venv: run 'bash deploy/setup.sh --no-demo' first"
  mkdir -p "$FLEET" "$ACE_OUTPUT_DIR"
  if [[ $ACE_BROKER_URL == redis://127.0.0.1:6379/* ]] \
      && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    say "WARNING: nothing answers on 127.0.0.1:6379; run 'bash deploy/setup.sh --no-demo'"
  fi
  local n
  for n in $(seq "$WORKERS"); do
    launch "w$n" "$BIN/celery" -A ace_workers worker -n "w$n@%h" --loglevel=INFO -E -c "$CONCURRENCY"
  done
  launch beat "$BIN/celery" -A ace_workers beat --loglevel=INFO \
    --schedule "$FLEET/celerybeat-schedule" --pidfile=
  launch flower "$BIN/celery" -A ace_workers flower --address=127.0.0.1 --port="$FLOWER_PORT"
  local api_note="api on $API_HOST:$API_PORT" ca=${ACE_CA_CERT_FILE:-${CA_CERT_FILE:-}}
  if [[ -n $ca ]]; then
    launch api "$BIN/ace" api --host "$API_HOST" --port "$API_PORT"
  else
    # the API serves mutual TLS only: without a CA it could only exit with an error
    api_note="api not started (no certificates: run '.venv/bin/python deploy/certs.py ace demo_caller', then start again)"
  fi

  sleep 3
  local name
  for name in $(services | sort -u); do
    [[ $name == api && -z $ca ]] && continue
    [[ -n $(live_pid "$name") ]] || say "WARNING: $name exited at once; see .ace-local/fleet/$name.log"
  done
  say "flower http://127.0.0.1:$FLOWER_PORT, $api_note, outputs in $ACE_OUTPUT_DIR"
  say "task store $ACE_DATABASE_URL"
  say "for the ace CLI: export ACE_BROKER_URL=$ACE_BROKER_URL ACE_CLUSTER_DIR=$ACE_CLUSTER_DIR ACE_OUTPUT_DIR=$ACE_OUTPUT_DIR"
  say "check later with: bash deploy/fleet.sh status"
}

stop() {
  # TERM every service first (workers finish their current task), then wait for all.
  local name pid
  local -A pids=()
  for name in $(services | sort -u); do
    pid=$(live_pid "$name")
    [[ -n $pid ]] || continue
    pids[$name]=$pid
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 150); do
    for name in "${!pids[@]}"; do
      kill -0 "${pids[$name]}" 2>/dev/null || { say "$name stopped"; unset "pids[$name]"; rm -f "$FLEET/$name.pid"; }
    done
    ((${#pids[@]})) || return 0
    sleep 0.1
  done
  for name in "${!pids[@]}"; do
    say "$name did not stop in 15 s, killing it"
    kill -KILL -- "-${pids[$name]}" 2>/dev/null || true
    rm -f "$FLEET/$name.pid"
  done
}

status() {
  local name pid down=0
  for name in $(services | sort -u); do
    pid=$(live_pid "$name")
    if [[ -n $pid ]]; then
      say "$name running (pid $pid)"
    else
      say "$name stopped"
      down=1
    fi
  done
  return "$down"
}

case "$command" in
  start) start ;;
  stop) stop ;;
  status) status || exit 3 ;;
  *) usage; exit 2 ;;
esac
