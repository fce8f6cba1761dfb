#!/usr/bin/env bash
# A throw-away Tansu behind a TLS terminator (stunnel), for trying rekafka's TLS by hand (for
# example the CLI with -X security.protocol=SSL). Tansu has no working TLS listener of its own
# (docs/broker-quirks.md §8). tests/security_tls.rs does the same from Rust.
#
#   eval "$(scripts/tls-broker.sh start)"   prints on stdout:
#       export REKAFKA_BOOTSTRAP=127.0.0.1:TLS_PORT   (Tansu advertises this TLS address)
#       export REKAFKA_TLS_CA=.../ca.pem              (ssl.ca.location)
#       export REKAFKA_TLS_CERT=.../client.pem REKAFKA_TLS_KEY=.../client.key   (for mTLS)
#   scripts/tls-broker.sh stop
#
# Env: TLS_MTLS=1 makes stunnel require a client certificate signed by the CA.
#      TLS_DIR (default target/tls-broker): certificates, pid files and logs.
# Needs openssl and stunnel (scripts/setup.sh installs stunnel4).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TLS_DIR:-$ROOT/target/tls-broker}"
say() { printf '[tls-broker] %s\n' "$*" >&2; }
die() { printf '[tls-broker] ERROR: %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# leaf NAME SAN EKU: a key and a certificate signed by the CA.
leaf() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/$1.key" \
    -out "$DIR/$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3" > "$DIR/$1.ext"
  openssl x509 -req -in "$DIR/$1.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -out "$DIR/$1.pem" -days 7 -extfile "$DIR/$1.ext" 2>/dev/null
}

cmd_start() {
  command -v openssl >/dev/null || die "openssl not found"
  command -v stunnel >/dev/null || die "stunnel not found; run scripts/setup.sh"
  [ -f "$DIR/stunnel.pid" ] && die "already running? run '$0 stop' first"
  mkdir -p "$DIR"
  say "generating a CA, a server certificate (127.0.0.1, localhost) and a client certificate in $DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/ca.key" \
    -out "$DIR/ca.pem" -days 7 -subj "/CN=rekafka test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  leaf server "IP:127.0.0.1,DNS:localhost" serverAuth
  leaf client "DNS:client" clientAuth

  local port; port="$(free_port)"
  local line
  line="$(TANSU_PIDFILE="$DIR/tansu.pid" TANSU_ADVERTISED="127.0.0.1:$port" "$ROOT/scripts/broker.sh" start)"
  local plain="${line#export REKAFKA_BOOTSTRAP=}"
  local verify=""
  if [ "${TLS_MTLS:-0}" = "1" ]; then
    verify="CAfile = $DIR/ca.pem
verifyChain = yes
requireCert = yes"
  fi
  cat > "$DIR/stunnel.conf" <<EOF
pid = $DIR/stunnel.pid
output = $DIR/stunnel.log
[kafka-tls]
accept = 127.0.0.1:$port
connect = $plain
cert = $DIR/server.pem
key = $DIR/server.key
$verify
EOF
  stunnel "$DIR/stunnel.conf" || die "stunnel failed; see $DIR/stunnel.log"
  local i
  for i in $(seq 1 50); do port_open "$port" && break; sleep 0.1; done
  port_open "$port" || die "stunnel does not listen on $port; see $DIR/stunnel.log"
  say "TLS on 127.0.0.1:$port -> tansu on $plain (mTLS: ${TLS_MTLS:-0})"
  echo "export REKAFKA_BOOTSTRAP=127.0.0.1:$port REKAFKA_TLS_CA=$DIR/ca.pem REKAFKA_TLS_CERT=$DIR/client.pem REKAFKA_TLS_KEY=$DIR/client.key"
}

cmd_stop() {
  if [ -f "$DIR/stunnel.pid" ]; then
    local pid; pid="$(cat "$DIR/stunnel.pid")"
    if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q stunnel; then
      say "stopping stunnel (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/stunnel.pid"
  fi
  TANSU_PIDFILE="$DIR/tansu.pid" "$ROOT/scripts/broker.sh" stop
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start | stop" >&2; exit 2 ;;
esac
