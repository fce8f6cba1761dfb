#!/usr/bin/env bash
# Builds the Spring side of the conformance harness once: target/spring-runner-0.1.0.jar plus its
# dependencies in target/lib (Spring for Apache Kafka from Maven Central). Idempotent: a second
# run with nothing changed returns in about a second without starting Maven.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runner="$here/runner"
jar="$runner/target/spring-runner-0.1.0.jar"
stamp="$runner/target/.build-stamp"
if [[ -f "$jar" && -f "$stamp" && -d "$runner/target/lib" ]]; then
  newer="$(find "$runner/pom.xml" "$runner/src" -newer "$stamp" -type f | head -1)"
  if [[ -z "$newer" ]]; then
    echo "spring runner up to date: $jar"
    exit 0
  fi
fi
command -v mvn >/dev/null || { echo "build.sh: Maven (mvn) is needed (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "build.sh: Java 17+ is needed (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
(cd "$runner" && mvn -q -B -DskipTests package)
touch "$stamp"
echo "built $jar"
