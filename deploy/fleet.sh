#!/usr/bin/env bash
# Run ACE's services on this machine without Docker: Celery workers, beat, Flower and the API.
#
#   bash deploy/fleet.sh start [--workers 2] [--concurrency 2]
#   bash deploy/fleet.sh status
#   bash deploy/fleet.sh stop
#
# Each service runs in the background in its own process group; pid files and logs
# are in .ace-local/fleet/. Run deploy/setup.sh first (redis-server, .venv). Settings
# come from the ACE_* variables below; set any of them beforehand to override.
# Unless ACE_BROKER_URL names a Redis of yours, the fleet runs its own on
# 127.0.0.1:${ACE_REDIS_PORT:-6380}, with the password in .ace-local/redis.password.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# pid files, logs and the fleet Redis's config (ACE_FLEET_DIR: a second fleet beside this one)
FLEET=${ACE_FLEET_DIR:-$ROOT/.ace-local/fleet}
BIN=$ROOT/.venv/bin

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
# secret_file PATH HEXBYTES: create PATH (mode 0600) holding a random secret, unless it exists.
secret_file() {
  [[ -s $1 ]] && return 0
  mkdir -p "$(dirname "$1")"
  (umask 077 && od -An -vtx1 -N"$2" /dev/urandom | tr -d ' \n' >"$1" && echo >>"$1")
}
# Redis wants a password (docs/security.md): the fleet's own Redis, unless ACE_BROKER_URL
# names another, has one generated into .ace-local/redis.password (mode 0600).
REDIS_PORT=${ACE_REDIS_PORT:-6380}
OWN_REDIS=0
if [[ -z ${ACE_BROKER_URL:-} ]]; then
  OWN_REDIS=1
  secret_file "$ROOT/.ace-local/redis.password" 24
  REDIS_PASSWORD=$(<"$ROOT/.ace-local/redis.password")
  export ACE_BROKER_URL=redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0
  export ACE_RESULT_BACKEND=${ACE_RESULT_BACKEND:-redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/1}
fi
export ACE_RESULT_BACKEND=${ACE_RESULT_BACKEND:-$ACE_BROKER_URL}
# Workers run only task messages signed with this key (docs/security.md): the API, the CLI,
# beat and the workers hold it; Flower does not.
if [[ -z ${ACE_TASK_SIGNING_KEY_FILE:-} && -z ${ACE_TASK_SIGNING_KEY:-} ]]; then
  export ACE_TASK_SIGNING_KEY_FILE=$ROOT/.ace-local/task-signing.key
  secret_file "$ACE_TASK_SIGNING_KEY_FILE" 32
fi
API_HOST=${ACE_API_HOST:-127.0.0.1}
API_PORT=${ACE_API_PORT:-5000}
FLOWER_PORT=${ACE_FLOWER_PORT:-5555}
FLOWER_USER=${ACE_FLOWER_USER:-ace}

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
      && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE 'celery|ace|redis'; then
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
  say "$name started (pid $!, log ${FLEET#"$ROOT"/}/$name.log)"
}

# Services in start order; workers are w1..wN.
services() {
  local n
  for n in $(seq "$WORKERS"); do echo "w$n"; done
  # Workers from an earlier start with more of them still need stopping.
  for f in "$FLEET"/w*.pid; do [[ -e $f ]] && basename "$f" .pid; done
  echo beat flower api
  # the fleet's own Redis, last: it is stopped after everything that uses it
  if ((OWN_REDIS)) || [[ -f $FLEET/redis.pid ]]; then echo redis; fi
}

# The fleet's own Redis: its password in a private config file (never on a command line).
start_redis() {
  ((OWN_REDIS)) || return 0
  local conf=$FLEET/redis.conf
  (umask 077 && printf '%s\n' "bind 127.0.0.1" "port $REDIS_PORT" 'save ""' "appendonly no" \
    "dir $FLEET" "requirepass $REDIS_PASSWORD" >"$conf")
  if [[ -z $(live_pid redis) ]] && (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
    die "something else listens on 127.0.0.1:$REDIS_PORT; stop it, or set ACE_REDIS_PORT to a free port"
  fi
  launch redis redis-server "$conf"
  local _
  for _ in $(seq 50); do redis_answers && return 0; sleep 0.1; done
  die "redis did not answer on 127.0.0.1:$REDIS_PORT; see ${FLEET#"$ROOT"/}/redis.log"
}

# Flower shows every task and could send some: it asks for a password (basic auth, given in
# its environment, not on a command line) and gets no signing key, so workers would refuse
# whatever it sent. The password is made once, printed once, and kept (0600) in its file.
start_flower() {
  local file=$ROOT/.ace-local/flower.password new=0
  [[ -s $file ]] || new=1
  secret_file "$file" 16
  (
    export FLOWER_BASIC_AUTH="$FLOWER_USER:$(<"$file")"
    launch flower env -u ACE_TASK_SIGNING_KEY_FILE -u ACE_TASK_SIGNING_KEY \
      "$BIN/celery" -A ace_workers flower --address=127.0.0.1 --port="$FLOWER_PORT"
  )
  if ((new)); then
    say "flower asks for user $FLOWER_USER, password $(<"$file") (shown once; kept in ${file#"$ROOT"/})"
  else
    say "flower asks for user $FLOWER_USER and the password in ${file#"$ROOT"/}"
  fi
}

redis_answers() {
  local reply
  (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'AUTH %s\r\nPING\r\n' "$REDIS_PASSWORD" >&3 \
    && read -r -t 2 reply <&3 && read -r -t 2 reply <&3 && [[ $reply == +PONG* ]]) 2>/dev/null
}

start() {
  [[ -x $BIN/celery ]] || die "no .venv: run 'bash deploy/setup.sh --no-demo' first"
  mkdir -p "$FLEET" "$ACE_OUTPUT_DIR"
  command -v redis-server >/dev/null || ((!OWN_REDIS)) \
    || die "redis-server is not installed: run 'bash deploy/setup.sh --no-demo' first"
  start_redis
  if ((!OWN_REDIS)) && [[ $ACE_BROKER_URL != *://*:*@* && $ACE_BROKER_URL != unix://* ]]; then
    say "WARNING: ACE_BROKER_URL has no password; anyone who reaches that Redis can queue work"
  fi
  local n
  for n in $(seq "$WORKERS"); do
    launch "w$n" "$BIN/celery" -A ace_workers worker -n "w$n@%h" --loglevel=INFO -E -c "$CONCURRENCY"
  done
  launch beat "$BIN/celery" -A ace_workers beat --loglevel=INFO \
    --schedule "$FLEET/celerybeat-schedule" --pidfile=
  start_flower
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
    [[ -n $(live_pid "$name") ]] || say "WARNING: $name exited at once; see ${FLEET#"$ROOT"/}/$name.log"
  done
  say "flower http://127.0.0.1:$FLOWER_PORT, $api_note, outputs in $ACE_OUTPUT_DIR"
  say "task store $ACE_DATABASE_URL"
  local broker=$ACE_BROKER_URL
  # the password stays in its file: the export reads it from there
  ((OWN_REDIS)) && broker="redis://:\$(cat $ROOT/.ace-local/redis.password)@127.0.0.1:$REDIS_PORT/0"
  say "for the ace CLI: export ACE_BROKER_URL=$broker ACE_CLUSTER_DIR=$ACE_CLUSTER_DIR ACE_OUTPUT_DIR=$ACE_OUTPUT_DIR ACE_TASK_SIGNING_KEY_FILE=${ACE_TASK_SIGNING_KEY_FILE:-}"
  say "check later with: bash deploy/fleet.sh status"
}

stop() {
  stop_these $(services | sort -u | grep -vx redis)
  stop_these $(services | grep -x redis)
}

stop_these() {
  # TERM every service first (workers finish their current task), then wait for all.
  local name pid
  local -A pids=()
  for name in "$@"; do
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
