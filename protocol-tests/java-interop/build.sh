#!/usr/bin/env bash
# Builds the Java-client interop harness used by tests/java_interop.rs:
# target/java-interop.jar and its runtime dependencies in target/lib/.
# Idempotent: does nothing when the jar is newer than the pom and every source.
set -euo pipefail
cd "$(dirname "$0")"
jar=target/java-interop.jar
if [[ -f $jar && -d target/lib ]] &&
    [[ -z $(find pom.xml src -newer "$jar" -print -quit) ]]; then
    exit 0
fi
command -v mvn >/dev/null || { echo "build.sh: Maven (mvn) is needed" >&2; exit 1; }
rm -rf target/lib
# Maven 3.8 prints bare colour resets even in batch mode with colours off: strip them.
mvn -q -B -Dstyle.color=never package dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory=target/lib 2>&1 | sed 's/\x1b\[0m//g'
touch "$jar"
