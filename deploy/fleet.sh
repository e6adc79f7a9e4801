#!/usr/bin/env bash
# Run ACE's services on this machine without Docker: Celery workers, beat, Flower and the API.
#
#   bash deploy/fleet.sh start [--workers 2] [--concurrency 2] [--purge]
#   bash deploy/fleet.sh status
#   bash deploy/fleet.sh stop
#
# Each service runs in the background in its own process group; pid files and logs
# are in .ace-local/fleet/. Run deploy/setup.sh first (redis-server, .venv). Settings
# come from the ACE_* variables below; set any of them beforehand to override.
# Unless ACE_BROKER_URL names a Redis of yours, the fleet runs its own on
# 127.0.0.1:${ACE_REDIS_PORT:-6380}, with the password in .ace-local/redis.password,
# keeping its state in an append-only file (appendfsync everysec) in .ace-local/fleet/.
# The API listens on ACE_API_HOST:ACE_API_PORT (127.0.0.1:5000), Flower on
# 127.0.0.1:ACE_FLOWER_PORT (5555). Messages still queued in Redis from an earlier
# run are run by this one; 'start --purge' drops them first.
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
# Written aside and linked into place, so that of two starts in one checkout at the same
# moment, both keep the secret of whichever linked first.
secret_file() {
  [[ -s $1 ]] && return 0
  mkdir -p "$(dirname "$1")"
  local new
  new=$(umask 077 && mktemp "$1.XXXXXX")
  od -An -vtx1 -N"$2" /dev/urandom | tr -d ' \n' >"$new" && echo >>"$new"
  ln "$new" "$1" 2>/dev/null || [[ -s $1 ]] || mv -f "$new" "$1"
  rm -f "$new"
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
WORKERS=
CONCURRENCY=2
PURGE=0
while (($#)); do
  case "$1" in
    --purge) PURGE=1; shift ;;
    --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
    --workers=*) WORKERS=${1#*=}; shift ;;
    --concurrency) CONCURRENCY=${2:?--concurrency needs a number}; shift 2 ;;
    --concurrency=*) CONCURRENCY=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
# status and stop look after as many workers as the last start ran
if [[ -z $WORKERS && $command != start && -f $FLEET/workers ]]; then WORKERS=$(<"$FLEET/workers"); fi
WORKERS=${WORKERS:-2}
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number"
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "--concurrency must be a positive number"

# Every service is started with ACE_FLEET_SERVICE=<fleet dir>/<name> in its environment,
# which its children inherit. A pid (or process group) is taken for the service's only
# while a process there carries that mark: after a reboot, or long enough, a pid file's
# number belongs to some other program, which must never be signalled.
mark() { echo "ACE_FLEET_SERVICE=$FLEET/$1"; }

# ours PID NAME: process PID carries service NAME's mark. (A process started by an
# earlier fleet.sh, before the mark, passes when it carries no mark and runs this
# checkout's programs or this fleet's Redis config.) Redis writes its title over its
# environment, so the fleet's Redis is known by its title: redis-server on its port.
ours() {
  local env
  if [[ $2 == redis ]]; then
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null \
      | grep -qE "^redis-server 127\.0\.0\.1:$REDIS_PORT( |\$)"
    return
  fi
  env=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null) || return 1
  [[ -n $env ]] || return 1
  grep -qxF "$(mark "$2")" <<<"$env" && return 0
  grep -q '^ACE_FLEET_SERVICE=' <<<"$env" && return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -e "$BIN/" -e "$FLEET/"
}

# Prints the pid of service $1 if it is running, else nothing. A stale pid file is
# dropped, unless processes of that service's group outlived it (see left_over).
live_pid() {
  local file=$FLEET/$1.pid pid
  [[ -f $file ]] || return 0
  pid=$(<"$file")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && ours "$pid" "$1"; then
    echo "$pid"
  elif [[ -z $(left_over "$1") ]]; then
    rm -f "$file"
  fi
}

# Prints the pids of processes left in service $1's process group after its first
# process died (setsid made that process the group's leader: group id = its pid),
# e.g. the API's gunicorn workers after their master was killed: they keep its port.
left_over() {
  local file=$FLEET/$1.pid pid
  [[ -f $file ]] || return 0
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null && ours "$pid" "$1" && return 0
  local p
  for p in $(pgrep -g "$pid" 2>/dev/null); do
    ours "$p" "$1" && printf '%s ' "$p"
  done
  return 0
}

# End what is left of service $1's earlier run (see left_over): TERM, then KILL after 3 s,
# each process by its own pid, once it is found to carry the service's mark.
reap() {
  local name=$1 left
  left=$(left_over "$name")
  [[ -n $left ]] || return 0
  say "$name: processes of its earlier run are still there (pids ${left% }); ending them"
  # shellcheck disable=SC2086  # a list of pids
  kill -TERM $left 2>/dev/null || true
  for _ in $(seq 30); do
    [[ -z $(left_over "$name") ]] && break
    sleep 0.1
  done
  left=$(left_over "$name")
  # shellcheck disable=SC2086
  [[ -z $left ]] || kill -KILL $left 2>/dev/null || true
  for _ in $(seq 50); do
    [[ -z $(left_over "$name") ]] && { rm -f "$FLEET/$name.pid"; return 0; }
    sleep 0.1
  done
  die "$name: processes of its earlier run (pids ${left% }) do not end; end them, then start again"
}

# port_answers HOST PORT: something accepts connections there. A wildcard address is
# asked on loopback.
port_answers() {
  local host=$1
  case "$host" in 0.0.0.0|"") host=127.0.0.1 ;; ::|"[::]") host=::1 ;; esac
  (exec 3<>"/dev/tcp/$host/$2") 2>/dev/null
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
  reap "$name"
  # setsid gives each service its own process group, so stop can end its children too.
  setsid env "$(mark "$name")" "$@" >>"$FLEET/$name.log" 2>&1 </dev/null &
  echo $! >"$FLEET/$name.pid"
  [[ $name == api ]] || say "$name started (pid $!, log ${FLEET#"$ROOT"/}/$name.log)"
}

# The API counts as started once its port answers and its master still runs; a port
# held by something else is refused before starting, not found out from its log.
start_api() {
  rm -f "$FLEET/api.skipped"
  local pid=$(live_pid api) log=${FLEET#"$ROOT"/}/api.log
  if [[ -n $pid ]]; then
    say "api already running (pid $pid)"
    return 0
  fi
  reap api
  # A process killed a moment ago can still hold the port: Linux frees its memory (and
  # with it what tells it is ours) before its sockets. So the port gets 5 s to come free.
  local waited=0
  while port_answers "$API_HOST" "$API_PORT"; do
    (( waited++ < 50 )) ||
      die "something else listens on $API_HOST:$API_PORT; stop it, or set ACE_API_PORT to a free port"
    sleep 0.1
  done
  launch api "$BIN/ace" api --host "$API_HOST" --port "$API_PORT"
  pid=$(<"$FLEET/api.pid")
  for _ in $(seq 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      API_FAILED=1
      say "WARNING: api exited at once; see $log"
      return 0
    fi
    if port_answers "$API_HOST" "$API_PORT"; then
      say "api started (pid $pid, answering on $API_HOST:$API_PORT, log $log)"
      return 0
    fi
    sleep 0.1
  done
  API_FAILED=1
  say "WARNING: api (pid $pid) does not answer on $API_HOST:$API_PORT after 15 s; see $log"
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
  # An append-only file, written to disk every second: a restart of Redis keeps the
  # queued work (a crash of the host loses at most its last second; docs/operations.md).
  (umask 077 && printf '%s\n' "bind 127.0.0.1" "port $REDIS_PORT" 'save ""' "appendonly yes" \
    "appendfsync everysec" "dir $FLEET" "requirepass $REDIS_PASSWORD" >"$conf")
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
  ((PURGE)) && purge
  echo "$WORKERS" >"$FLEET/workers"
  local n
  for n in $(seq "$WORKERS"); do
    # Workers yield the CPU to the API (nice): a submission or a status poll must not wait
    # behind the work it queued, on a host that runs both (ACE_WORKER_NICE, 0 to turn off).
    launch "w$n" nice -n "${ACE_WORKER_NICE:-10}" "$BIN/celery" -A ace_workers worker -n "w$n@%h" --loglevel=INFO -E -c "$CONCURRENCY"
  done
  launch beat "$BIN/celery" -A ace_workers beat --loglevel=INFO \
    --schedule "$FLEET/celerybeat-schedule" --pidfile=
  start_flower
  local api_note="api on $API_HOST:$API_PORT" ca=${ACE_CA_CERT_FILE:-${CA_CERT_FILE:-}}
  API_FAILED=0
  if [[ -n $ca ]]; then
    start_api
  else
    # the API serves mutual TLS only: without a CA it could only exit with an error
    api_note="api not started (no certificates: run '.venv/bin/python deploy/certs.py ace demo_caller', then start again)"
    [[ -n $(live_pid api) ]] || echo "$api_note" >"$FLEET/api.skipped"
  fi

  sleep 3
  local name
  for name in $(services | sort -u); do
    [[ $name == api ]] && continue  # start_api has waited for it already
    [[ -n $(live_pid "$name") ]] || say "WARNING: $name exited at once; see ${FLEET#"$ROOT"/}/$name.log"
  done
  say "flower http://127.0.0.1:$FLOWER_PORT, $api_note, outputs in $ACE_OUTPUT_DIR"
  say "task store $ACE_DATABASE_URL"
  local broker=$ACE_BROKER_URL backend=$ACE_RESULT_BACKEND
  # the password stays in its file: the export reads it from there
  if ((OWN_REDIS)); then
    broker="redis://:\$(cat $ROOT/.ace-local/redis.password)@127.0.0.1:$REDIS_PORT/0"
    [[ $backend == "redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/1" ]] \
      && backend="redis://:\$(cat $ROOT/.ace-local/redis.password)@127.0.0.1:$REDIS_PORT/1"
  fi
  say "for the ace CLI: export ACE_BROKER_URL=$broker ACE_RESULT_BACKEND=$backend ACE_CLUSTER_DIR=$ACE_CLUSTER_DIR ACE_OUTPUT_DIR=$ACE_OUTPUT_DIR ACE_TASK_SIGNING_KEY_FILE=${ACE_TASK_SIGNING_KEY_FILE:-}"
  say "check later with: bash deploy/fleet.sh status"
  ((!API_FAILED)) || exit 1
}

# --purge: drop the task messages an earlier run left in Redis (queued, or taken by a
# worker that never finished them), before any worker of this run can take one.
purge() {
  local name
  for name in $(services | grep '^w'); do
    [[ -z $(live_pid "$name") ]] || die "--purge drops queued work only while no worker runs: run 'bash deploy/fleet.sh stop' first"
  done
  "$BIN/python" - <<'PY' || die "could not purge the queued messages; is Redis running?"
from ace_workers.app import QUEUE, get_app
app = get_app()
with app.connection_for_write() as conn:
    dropped = conn.default_channel.queue_purge(QUEUE) or 0
    client = conn.default_channel.client
    dropped += client.hlen("unacked")
    client.delete("unacked", "unacked_index")
print(f"fleet: dropped {dropped} task messages left by an earlier run; "
      "their tasks stay unfinished in the task store")
PY
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
    [[ -n $pid ]] || { reap "$name"; continue; }
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
    if [[ $name == api && -z $pid && -f $FLEET/api.skipped ]]; then
      say "$(<"$FLEET/api.skipped")"  # left out on purpose: not a service that is down
    elif [[ $name == api && -n $pid ]] && ! port_answers "$API_HOST" "$API_PORT"; then
      say "api running (pid $pid) but not answering on $API_HOST:$API_PORT; see ${FLEET#"$ROOT"/}/api.log"
      down=1
    elif [[ -n $pid ]]; then
      say "$name running (pid $pid)"
    elif [[ -n $(left_over "$name") ]]; then
      say "$name stopped, but processes of it are left (pids $(left_over "$name")); 'start' ends them"
      down=1
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
