#!/usr/bin/env bash
# Strata's own services in the background, for `make run` / `make stop` / `make demo`.
#
#   infra/services.sh start      start every service that is not running (binaries from target/)
#   infra/services.sh stop       stop them (SIGTERM, then SIGKILL after 20 s) and the demo generator
#   infra/services.sh status     one line per service
#   infra/services.sh gen ARGS   start strata-gen in the background with ARGS (the demo's load)
#   infra/services.sh producers  start the demo's Prometheus (remote-writing) and OTLP producer
#
# Logs go to $STRATA_HOME/logs/<service>.log, pids to $STRATA_HOME/run/<service>.pid.
# Services join SERVICES as their layer lands: each entry is "name:binary args...".
# With STRATA__BATCH__ENGINE=ballista (`make run BALLISTA=1`, `make demo BALLISTA=1`), recomputes
# run on an Apache DataFusion Ballista cluster on loopback: a scheduler (:50050) and two executors
# (Flight :50061 and :50071), started before the batch service.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA_HOME=${STRATA_HOME:-$ROOT/.strata}
RUN=$STRATA_HOME/run
LOGS=$STRATA_HOME/logs
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/${STRATA_PROFILE:-debug}

SERVICES=(
  "speed:strata-speed run"
  "archive:strata-batch archive"
  "batch:strata-batch serve"
  "serving:strata-serving"
)

CLUSTER=(
  "ballista-scheduler:strata-batch ballista scheduler"
  "ballista-executor-1:strata-batch ballista executor --port 50061 --grpc-port 50062 --work-dir $STRATA_HOME/ballista/1"
  "ballista-executor-2:strata-batch ballista executor --port 50071 --grpc-port 50072 --work-dir $STRATA_HOME/ballista/2"
)
# `make demo`'s producers of standard protocols: Debian's Prometheus scraping Strata and
# remote-writing to strata-serving, and an OpenTelemetry-instrumented app sending OTLP.
DEMO=(
  "prometheus:$(command -v prometheus || echo /usr/bin/prometheus) --config.file=$ROOT/infra/demo/prometheus.yml --storage.tsdb.path=$STRATA_HOME/prometheus --web.listen-address=127.0.0.1:9090"
  "otel-demo:$STRATA_HOME/venv/bin/python $ROOT/infra/demo/otel_producer.py"
)
ALL=("${CLUSTER[@]}" "${SERVICES[@]}" "${DEMO[@]}")
if [ "${STRATA__BATCH__ENGINE:-embedded}" = ballista ]; then
  mkdir -p "$STRATA_HOME/ballista/1" "$STRATA_HOME/ballista/2"
  SERVICES=("${CLUSTER[@]}" "${SERVICES[@]}")
fi

# StatsD is off by default (replicas on one host would fight over its port); the local services
# receive it at the usual ports.
export STRATA__INGEST__STATSD_UDP_LISTEN=${STRATA__INGEST__STATSD_UDP_LISTEN:-127.0.0.1:8125}
export STRATA__INGEST__STATSD_TCP_LISTEN=${STRATA__INGEST__STATSD_TCP_LISTEN:-127.0.0.1:8126}
# The stack's vmalert (infra/stack.sh up): its rules and alerts are listed through the query API.
export STRATA__SERVING__RULES_URL=${STRATA__SERVING__RULES_URL:-http://127.0.0.1:${STRATA_VMALERT_PORT:-8880}}

log() { printf '[services] %s\n' "$*" >&2; }

# The binary a service runs.
binary_of() {
  local s
  [ "$1" = gen ] && { echo strata-gen; return; }
  for s in "${ALL[@]}"; do
    if [ "${s%%:*}" = "$1" ]; then
      s=${s#*:}; s=${s%% *}
      # An absolute path (not one of ours): the executable it resolves to.
      [[ "$s" = /* ]] && s=$(readlink -f "$s")
      echo "${s##*/}"; return
    fi
  done
}

# Whether pid $1 is a running process (not a zombie: PID 1 here reaps slowly, and `kill -0`
# succeeds on a zombie) of the binary $2 (pid files outlive reboots, and pids are reused).
running() {
  local pid=$1 bin=$2 stat state exe
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  state=${stat##*) }; state=${state%% *}
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [ "${exe##*/}" = "$bin" ]
}

alive() { [ -f "$RUN/$1.pid" ] && running "$(cat "$RUN/$1.pid")" "$(binary_of "$1")"; }

launch() {
  local name=$1; shift
  if alive "$name"; then log "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  local exe=$1
  [[ "$exe" = /* ]] || exe=$TARGET/$1
  [ -x "$exe" ] || { log "missing $exe: run 'cargo build' (or 'make up') first"; exit 1; }
  mkdir -p "$RUN" "$LOGS"
  cd "$ROOT"
  (
    # Close inherited descriptors above 2: a daemon must not hold its starter's pipes open.
    for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null
    exec setsid "$exe" "${@:2}" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  local pid=$!
  echo "$pid" >"$RUN/$name.pid"
  # Until the subshell has exec'd the binary, /proc/PID/exe is bash: wait for it (or its end).
  for _ in $(seq 1 25); do alive "$name" && break; [ -d "/proc/$pid" ] || break; sleep 0.2; done
  sleep 0.3
  alive "$name" || { tail -20 "$LOGS/$name.log" >&2; log "$name exited at start (log: $LOGS/$name.log)"; exit 1; }
  log "started $name (pid $(cat "$RUN/$name.pid"), log $LOGS/$name.log)"
}

halt() {
  local name=$1
  alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  local pid
  pid=$(cat "$RUN/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do alive "$name" || break; sleep 0.2; done
  alive "$name" && { log "$name ignored SIGTERM for 20 s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$RUN/$name.pid"
  log "stopped $name"
}

case "${1:-}" in
  start)
    [ ${#SERVICES[@]} -eq 0 ] && log "no Strata services are built yet"
    for s in "${SERVICES[@]}"; do
      read -r -a parts <<<"${s#*:}"
      launch "${s%%:*}" "${parts[@]}"
    done ;;
  producers)
    for s in "${DEMO[@]}"; do
      read -r -a parts <<<"${s#*:}"
      launch "${s%%:*}" "${parts[@]}"
    done ;;
  stop)
    halt gen
    for s in "${DEMO[@]}"; do halt "${s%%:*}"; done
    # The batch service before the cluster it sends work to.
    for s in "${SERVICES[@]}" "${CLUSTER[@]}"; do halt "${s%%:*}"; done ;;
  status)
    for s in gen "${ALL[@]}"; do
      n=${s%%:*}
      if alive "$n"; then echo "$n running (pid $(cat "$RUN/$n.pid"))"; else echo "$n stopped"; fi
    done ;;
  gen)
    shift
    launch gen strata-gen "$@" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
