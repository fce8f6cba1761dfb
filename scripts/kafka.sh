#!/usr/bin/env bash
# Apache Kafka (KRaft) as the test broker: installed from Maven Central, run on 127.0.0.1 without
# Docker. Every node is a combined controller+broker JVM; data and logs live under target/kafka/.
#
#   scripts/kafka.sh install                       resolve the pinned broker into .tools/kafka/lib
#                                                  (offline and seconds once done)
#   scripts/kafka.sh start [--nodes 1|3] [--sasl] [--ssl] [--proxy]
#                                                  format fresh storage, start the nodes, wait until
#                                                  Metadata lists every broker; the LAST line printed
#                                                  is the plaintext bootstrap list host:port,...
#   scripts/kafka.sh stop                          stop every node (SIGTERM, SIGKILL after 15 s)
#   scripts/kafka.sh kill NODE                     SIGKILL node NODE (1-based id)
#   scripts/kafka.sh pause NODE | resume NODE      SIGSTOP / SIGCONT
#   scripts/kafka.sh restart NODE                  stop NODE if it runs, start it again with the same
#                                                  id and data dir, wait until it is registered
#   scripts/kafka.sh status                        one line per node; exit 1 when nothing runs
#   scripts/kafka.sh env                           the export lines for tests (also in target/kafka/env)
#   scripts/kafka.sh bootstrap                     the plaintext bootstrap list
#
# --sasl adds a SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and unsecured
# OAUTHBEARER); --ssl adds an SSL listener, an SSL listener that requires a client certificate
# (mTLS), and with --sasl a SASL_SSL listener (whose sessions last 5 s: connections.max.reauth.ms,
# KIP-368, so clients re-authenticate). Certificates (a CA, the brokers', a client's) are
# made at start under target/kafka/tls/. The plaintext listener is always there, and brokers talk
# to each other over it. `env` prints every address, user and file:
#
#   REKAFKA_BOOTSTRAP            plaintext bootstrap list (what the test suites use)
#   REKAFKA_SASL_BOOTSTRAP       SASL_PLAINTEXT           REKAFKA_SSL_BOOTSTRAP   SSL
#   REKAFKA_MTLS_BOOTSTRAP       SSL, client cert required REKAFKA_SASL_SSL_BOOTSTRAP SASL_SSL
#   REKAFKA_SASL_USER / _PASSWORD (PLAIN and both SCRAMs), REKAFKA_TLS_CA, REKAFKA_TLS_CLIENT_CERT,
#   REKAFKA_TLS_CLIENT_KEY, REKAFKA_TLS_OTHER_CA (a CA that signed nothing here)
#
# >>> proxy (tests/support/proxy.rs; owned by the failover suite)
# --proxy adds a PLAINTEXT listener PROXIED per node whose ADVERTISED address is another port, where
# a fault proxy (tests/support/proxy.rs) is expected to listen and forward to the node. Clients that
# bootstrap through the proxy ports therefore reach every broker through the proxy, while brokers
# keep talking to each other over PLAINTEXT. Per node: port.PROXIED (the broker's listener) and
# port.PROXY (the advertised, proxy side). `env` adds:
#   REKAFKA_PROXY_BOOTSTRAP      the proxy addresses host:port,...
#   REKAFKA_PROXY_MAP            proxyport=brokerport,... (node order)
# <<< proxy
#
# Env: KAFKA_CLUSTER_DIR (default target/kafka) to run several clusters side by side;
#      KAFKA_HEAP_OPTS (default -Xms256m -Xmx1g per node);
#      KAFKA_PORTS: `start` takes its ports from this space-separated list (per node, in order:
#      PLAINTEXT, CONTROLLER, then the optional listeners) instead of picking free ones, so a
#      test can point a client at the cluster before it starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
LIB="$ROOT/.tools/kafka/lib"
STAMP="$ROOT/.tools/kafka/stamp"
DIR="${KAFKA_CLUSTER_DIR:-$ROOT/target/kafka}"
HOST=127.0.0.1
SASL_USER=alice
SASL_PASSWORD=alice-secret

say() { printf '[kafka] %s\n' "$*" >&2; }
die() { printf '[kafka] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ install
java_major() {
  command -v java >/dev/null 2>&1 || { echo 0; return; }
  java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

apt_get() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" = 0 ] || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1
}

ensure_java() {
  local need=()
  [ "$(java_major)" -ge 17 ] 2>/dev/null || need+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  [ ${#need[@]} -eq 0 ] && return 0
  say "missing: ${need[*]}; installing with apt-get"
  apt_get "${need[@]}" || die "cannot install ${need[*]}: install Java 17+ (a JDK), Maven and openssl, then re-run"
  [ "$(java_major)" -ge 17 ] 2>/dev/null || die "Java 17 or newer is required (found: $(java -version 2>&1 | head -1))"
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is required"
}

cmd_install() {
  ensure_java
  local want; want="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  say "resolving the broker from Maven Central ($(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM"))"
  rm -rf "$LIB"
  mkdir -p "$LIB"
  mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIB" -DincludeScope=runtime >"$ROOT/.tools/kafka/mvn.log" 2>&1 \
    || { cat "$ROOT/.tools/kafka/mvn.log" >&2; die "mvn dependency:copy-dependencies failed (is Maven Central reachable?)"; }
  compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || die "kafka_2.13 jar missing after resolution"
  echo "$want" > "$STAMP"
  say "installed $(ls "$LIB" | wc -l) jars into .tools/kafka/lib"
}

classpath() { printf '%s' "$LIB/*"; }

run_java() {   # run_java CLASS ARGS... (foreground, for the tools)
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -Dlog4j2.level=WARN -cp "$(classpath)" "$@"
}

# ------------------------------------------------------------------------------------ helpers
free_ports() {   # free_ports N: N distinct free TCP ports on 127.0.0.1 (or $KAFKA_PORTS)
  if [ -n "${KAFKA_PORTS:-}" ]; then
    local given; read -r -a given <<< "$KAFKA_PORTS"
    [ "${#given[@]}" -ge "$1" ] || die "KAFKA_PORTS names ${#given[@]} port(s); $1 needed"
    echo "${given[*]:0:$1}"
    return 0
  fi
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
EOF
}

node_dir() { echo "$DIR/node$1"; }
node_pid() { cat "$(node_dir "$1")/pid" 2>/dev/null || true; }
is_node_pid() {   # the pid is alive and is this cluster's node (guards against pid reuse)
  local pid="$1" nd="$2"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$nd/server.properties"
}
node_running() { is_node_pid "$(node_pid "$1")" "$(node_dir "$1")"; }
node_count() { cat "$DIR/nodes" 2>/dev/null || echo 0; }
node_state() {
  local pid; pid="$(node_pid "$1")"
  if ! node_running "$1"; then echo stopped; return; fi
  case "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" in T|t) echo paused ;; *) echo running ;; esac
}
plain_port() { cat "$(node_dir "$1")/port.PLAINTEXT"; }

metadata_brokers() {   # metadata_brokers PORT: prints the number of brokers the node lists
  python3 "$ROOT/scripts/kafka/metadata.py" "$HOST:$1" 2 2>/dev/null | sed -n 's/^brokers=\([0-9]*\).*/\1/p'
}

start_node() {   # start_node ID: start the JVM of an already formatted node
  local id="$1" nd; nd="$(node_dir "$id")"
  # setsid: own session, so the node survives the calling shell and Ctrl-C in its terminal.
  # shellcheck disable=SC2086
  setsid java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" -Dkafka.logs.dir="$nd" \
    -cp "$(classpath)" kafka.Kafka "$nd/server.properties" \
    </dev/null >>"$nd/server.log" 2>&1 &
  local pid=$! i
  echo "$pid" > "$nd/pid"
  # Until it has exec'd java, the background job is a copy of this shell, whose command line
  # does not name the node: wait (10 s at most) for the exec, so that node_running (which
  # checks the command line, against pid reuse) cannot read a node that is still starting on
  # a loaded machine as one that exited.
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$nd/server.properties" && break
    sleep 0.1
  done
}

wait_ready() {   # wait_ready ID... : every named node lists every broker; 180 s at most
  local n; n="$(node_count)"
  local deadline=$((SECONDS + 180)) id
  for id in "$@"; do
    while :; do
      node_running "$id" || {
        say "node $id exited; its errors:"
        grep -E 'ERROR|FATAL|Exception' "$(node_dir "$id")/server.log" | tail -n 15 >&2 || true
        return 2
      }
      [ "$(metadata_brokers "$(plain_port "$id")")" = "$n" ] && break
      [ $SECONDS -lt $deadline ] || { say "node $id not ready after 180 s; log tail:"; tail -n 30 "$(node_dir "$id")/server.log" >&2; return 1; }
      sleep 0.5
    done
  done
}

bootstrap_of() {   # bootstrap_of LISTENER: host:port,... over every node
  local n id out=()
  n="$(node_count)"
  for id in $(seq 1 "$n"); do
    [ -f "$(node_dir "$id")/port.$1" ] && out+=("$HOST:$(cat "$(node_dir "$id")/port.$1")")
  done
  (IFS=,; echo "${out[*]}")
}

# ------------------------------------------------------------------------------------ TLS
make_certs() {   # a CA, a broker certificate for 127.0.0.1, a client certificate, another CA
  local t="$DIR/tls"
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rekafka test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rekafka other CA" \
      -keyout other-ca.key -out other-ca.pem 2>/dev/null
    # The broker's name is 127.0.0.1 and kafka.rekafka.test, and not "localhost": a client that
    # connects by "localhost" must fail hostname verification.
    printf 'subjectAltName=IP:127.0.0.1,DNS:kafka.rekafka.test\nextendedKeyUsage=serverAuth,clientAuth\n' > broker.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kafka.rekafka.test" -keyout broker.key -out broker.csr 2>/dev/null
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile broker.ext \
      -out broker.crt 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=rekafka-client" -keyout client.key -out client.csr 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile client.ext \
      -out client.pem 2>/dev/null
    # Kafka's PEM key store: the private key (PKCS#8, unencrypted) then the certificate chain.
    openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
    cat broker.pk8 broker.crt ca.pem > broker-keystore.pem
    openssl pkcs8 -topk8 -nocrypt -in client.key -out client.pk8
  ) || die "making certificates with openssl failed"
}

# ------------------------------------------------------------------------------------ start
cmd_start() {
  local nodes=3 sasl=0 ssl=0 proxy=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes="${2:-}"; shift 2 ;;
      --nodes=*) nodes="${1#--nodes=}"; shift ;;
      --sasl) sasl=1; shift ;;
      --ssl) ssl=1; shift ;;
      --proxy) proxy=1; shift ;;   # proxy
      *) die "unknown option $1 (start [--nodes 1|3] [--sasl] [--ssl] [--proxy])" ;;
    esac
  done
  case "$nodes" in 1|3) ;; *) die "--nodes must be 1 or 3" ;; esac
  cmd_install

  local id
  for id in $(seq 1 "$(node_count)"); do
    if node_running "$id"; then
      say "a cluster is already running in $DIR; stop it first (or set KAFKA_CLUSTER_DIR)"
      cmd_bootstrap
      return 0
    fi
  done
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo "$nodes" > "$DIR/nodes"
  if [ "$ssl" = 1 ]; then make_certs; fi

  # Listeners per node. The plaintext one is always there and carries inter-broker traffic.
  local listeners=(PLAINTEXT CONTROLLER)
  [ "$sasl" = 1 ] && listeners+=(SASL)
  [ "$ssl" = 1 ] && listeners+=(SSL MTLS)
  [ "$sasl" = 1 ] && [ "$ssl" = 1 ] && listeners+=(SASLSSL)
  # >>> proxy: PROXIED is a broker listener; PROXY is only a port (the proxy's), never bound here
  [ "$proxy" = 1 ] && listeners+=(PROXIED PROXY)
  # <<< proxy
  local ports; read -r -a ports <<< "$(free_ports $((nodes * ${#listeners[@]})))"

  local voters=() i=0 l
  for id in $(seq 1 "$nodes"); do
    mkdir -p "$(node_dir "$id")/data"
    for l in "${listeners[@]}"; do
      echo "${ports[$i]}" > "$(node_dir "$id")/port.$l"
      i=$((i + 1))
    done
    voters+=("$id@$HOST:$(cat "$(node_dir "$id")/port.CONTROLLER")")
  done
  local rf=$(( nodes >= 3 ? 3 : 1 )) isr=$(( nodes >= 3 ? 2 : 1 ))
  local cluster_id
  # Never starting with '-' (kafka-storage would read it as an option; Kafka's own random
  # UUIDs avoid it too).
  cluster_id="$(python3 -c 'import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break')"

  for id in $(seq 1 "$nodes"); do
    local nd; nd="$(node_dir "$id")"
    local lst=() adv=()
    for l in "${listeners[@]}"; do
      # >>> proxy: PROXIED listens on its port and advertises the proxy's
      if [ "$l" = PROXY ]; then continue; fi
      if [ "$l" = PROXIED ]; then
        lst+=("$l://$HOST:$(cat "$nd/port.PROXIED")")
        adv+=("$l://$HOST:$(cat "$nd/port.PROXY")")
        continue
      fi
      # <<< proxy
      lst+=("$l://$HOST:$(cat "$nd/port.$l")")
      [ "$l" = CONTROLLER ] || adv+=("$l://$HOST:$(cat "$nd/port.$l")")
    done
    {
      echo "# node $id of a $nodes-node test cluster, written by scripts/kafka.sh"
      echo "process.roles=broker,controller"
      echo "node.id=$id"
      echo "controller.quorum.voters=$(IFS=,; echo "${voters[*]}")"
      echo "listeners=$(IFS=,; echo "${lst[*]}")"
      echo "advertised.listeners=$(IFS=,; echo "${adv[*]}")"
      echo "controller.listener.names=CONTROLLER"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL:SASL_PLAINTEXT,SSL:SSL,MTLS:SSL,SASLSSL:SASL_SSL$([ "$proxy" = 1 ] && echo ,PROXIED:PLAINTEXT)"
      echo "log.dirs=$nd/data"
      echo "num.partitions=3"
      echo "default.replication.factor=$rf"
      echo "min.insync.replicas=$isr"
      echo "offsets.topic.replication.factor=$rf"
      echo "offsets.topic.num.partitions=10"
      echo "transaction.state.log.replication.factor=$rf"
      echo "transaction.state.log.min.isr=$isr"
      echo "transaction.state.log.num.partitions=10"
      echo "share.coordinator.state.topic.replication.factor=$rf"
      echo "share.coordinator.state.topic.min.isr=$isr"
      echo "share.coordinator.state.topic.num.partitions=10"
      echo "auto.create.topics.enable=true"
      echo "delete.topic.enable=true"
      echo "group.initial.rebalance.delay.ms=0"
      # Tests run groups with short session timeouts (Kafka's floor is 6 s).
      echo "group.min.session.timeout.ms=1000"
      # Tests: quicker fault detection and clean-up than production defaults.
      echo "broker.session.timeout.ms=6000"
      echo "broker.heartbeat.interval.ms=1000"
      echo "replica.lag.time.max.ms=10000"
      echo "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000"
      echo "file.delete.delay.ms=1000"
      echo "log.segment.delete.delay.ms=1000"
      echo "controlled.shutdown.enable=true"
      if [ "$sasl" = 1 ]; then
        echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER"
        for l in sasl sasl_ssl; do
          [ "$l" = sasl_ssl ] && l=saslssl
          echo "listener.name.$l.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"admin-secret\" user_admin=\"admin-secret\" user_$SASL_USER=\"$SASL_PASSWORD\";"
          echo "listener.name.$l.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
          echo "listener.name.$l.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
          echo "listener.name.$l.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"admin\";"
          echo "listener.name.$l.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler"
        done
      fi
      if [ "$ssl" = 1 ]; then
        for l in ssl mtls saslssl; do
          echo "listener.name.$l.ssl.keystore.type=PEM"
          echo "listener.name.$l.ssl.keystore.location=$DIR/tls/broker-keystore.pem"
          echo "listener.name.$l.ssl.truststore.type=PEM"
          echo "listener.name.$l.ssl.truststore.location=$DIR/tls/ca.pem"
          echo "listener.name.$l.ssl.endpoint.identification.algorithm="
        done
        echo "listener.name.ssl.ssl.client.auth=none"
        echo "listener.name.mtls.ssl.client.auth=required"
        echo "listener.name.saslssl.ssl.client.auth=none"
        # KIP-368 on the SASL_SSL listener only: 5 s sessions, so clients must re-authenticate
        # (tests/security_kafka.rs checks they do); SASL_PLAINTEXT keeps Kafka's default (none).
        if [ "$sasl" = 1 ]; then echo "listener.name.saslssl.connections.max.reauth.ms=5000"; fi
      fi
    } > "$nd/server.properties"
    local fmt=(format -t "$cluster_id" -c "$nd/server.properties" --ignore-formatted)
    if [ "$sasl" = 1 ]; then
      fmt+=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
            --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
    fi
    run_java kafka.tools.StorageTool "${fmt[@]}" > "$nd/format.log" 2>&1 \
      || { cat "$nd/format.log" >&2; die "formatting node $id failed"; }
  done

  say "starting $nodes node(s) in $DIR (cluster $cluster_id)"
  for id in $(seq 1 "$nodes"); do start_node "$id"; done
  wait_ready $(seq 1 "$nodes") || { cmd_stop; die "the cluster did not come up"; }
  write_env "$sasl" "$ssl"
  say "ready: $nodes node(s); exports in $DIR/env"
  cmd_bootstrap
}

write_env() {
  local sasl="$1" ssl="$2"
  {
    echo "export REKAFKA_BOOTSTRAP=$(bootstrap_of PLAINTEXT)"
    echo "export REKAFKA_KAFKA_NODES=$(node_count)"
    echo "export REKAFKA_KAFKA_DIR=$DIR"
    if [ "$sasl" = 1 ]; then
      echo "export REKAFKA_SASL_BOOTSTRAP=$(bootstrap_of SASL)"
      echo "export REKAFKA_SASL_USER=$SASL_USER"
      echo "export REKAFKA_SASL_PASSWORD=$SASL_PASSWORD"
    fi
    if [ "$ssl" = 1 ]; then
      echo "export REKAFKA_SSL_BOOTSTRAP=$(bootstrap_of SSL)"
      echo "export REKAFKA_MTLS_BOOTSTRAP=$(bootstrap_of MTLS)"
      echo "export REKAFKA_TLS_CA=$DIR/tls/ca.pem"
      echo "export REKAFKA_TLS_OTHER_CA=$DIR/tls/other-ca.pem"
      echo "export REKAFKA_TLS_CLIENT_CERT=$DIR/tls/client.pem"
      echo "export REKAFKA_TLS_CLIENT_KEY=$DIR/tls/client.pk8"
    fi
    # An `if`, not `a && b && echo`: as the block's last command a false test would be its status,
    # and `set -e` would end `start` (without printing the bootstrap list) unless both are on.
    if [ "$sasl" = 1 ] && [ "$ssl" = 1 ]; then
      echo "export REKAFKA_SASL_SSL_BOOTSTRAP=$(bootstrap_of SASLSSL)"
    fi
    # >>> proxy
    if [ -f "$(node_dir 1)/port.PROXY" ]; then
      echo "export REKAFKA_PROXY_BOOTSTRAP=$(bootstrap_of PROXY)"
      local id map=()
      for id in $(seq 1 "$(node_count)"); do
        map+=("$(cat "$(node_dir "$id")/port.PROXY")=$(cat "$(node_dir "$id")/port.PROXIED")")
      done
      echo "export REKAFKA_PROXY_MAP=$(IFS=,; echo "${map[*]}")"
    fi
    # <<< proxy
  } > "$DIR/env"
}

# ------------------------------------------------------------------------------------ control
stop_pids() {   # stop_pids SIGNAL_WAIT_SECONDS PID...: SIGTERM (SIGCONT first), then SIGKILL
  local wait="$1"; shift
  [ $# -gt 0 ] || return 0
  kill -CONT "$@" 2>/dev/null || true
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + wait)) p alive
  while :; do
    alive=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    [ $SECONDS -lt $deadline ] || break
    sleep 0.2
  done
  say "SIGKILL after ${wait} s: ${alive[*]}"
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

cmd_stop() {
  local id pids=()
  for id in $(seq 1 "$(node_count)"); do
    node_running "$id" && pids+=("$(node_pid "$id")")
    rm -f "$(node_dir "$id")/pid"
  done
  if [ ${#pids[@]} -eq 0 ]; then say "not running"; return 0; fi
  say "stopping ${#pids[@]} node(s)"
  stop_pids 15 "${pids[@]}"
}

check_node() {
  local id="${1:-}"
  [[ "$id" =~ ^[0-9]+$ ]] && [ "$id" -ge 1 ] && [ "$id" -le "$(node_count)" ] \
    || die "no node '$id' (nodes are 1..$(node_count) in $DIR)"
}

cmd_kill() {
  check_node "${1:-}"
  node_running "$1" || { say "node $1 is not running"; return 0; }
  kill -KILL "$(node_pid "$1")"
  local i; for i in $(seq 1 50); do node_running "$1" || break; sleep 0.1; done
  say "node $1 killed (SIGKILL)"
}

cmd_signal() {   # cmd_signal SIG NODE
  check_node "${2:-}"
  node_running "$2" || die "node $2 is not running"
  kill "-$1" "$(node_pid "$2")"
  say "node $2: SIG$1"
}

cmd_restart() {
  check_node "${1:-}"
  if node_running "$1"; then
    say "stopping node $1"
    stop_pids 15 "$(node_pid "$1")"
  fi
  # A node SIGKILLed a moment ago can fail its first start (its ports or its data directory's
  # lock not yet released): try again a few times when it exits at once.
  local attempt rc
  for attempt in 1 2 3 4; do
    say "starting node $1"
    start_node "$1"
    rc=0
    wait_ready "$1" || rc=$?
    [ "$rc" = 0 ] && { say "node $1 is back"; return 0; }
    [ "$rc" = 2 ] || break
    sleep $((attempt * 2))
  done
  die "node $1 did not come back"
}

cmd_status() {
  local n; n="$(node_count)"
  [ "$n" -gt 0 ] || { say "no cluster in $DIR"; return 1; }
  local id any=0
  for id in $(seq 1 "$n"); do
    local st; st="$(node_state "$id")"
    [ "$st" = stopped ] || any=1
    echo "node $id: $st pid=$(node_pid "$id") $HOST:$(plain_port "$id")"
  done
  [ "$any" = 1 ]
}

cmd_env() { [ -f "$DIR/env" ] || die "no cluster started in $DIR"; cat "$DIR/env"; }
cmd_bootstrap() { bootstrap_of PLAINTEXT; }

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  kill) cmd_kill "${2:-}" ;;
  pause) cmd_signal STOP "${2:-}" ;;
  resume) cmd_signal CONT "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  bootstrap) cmd_bootstrap ;;
  *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
