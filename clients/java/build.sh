#!/usr/bin/env bash
# Builds and tests the imago Java client with plain javac and the JUnit 5 console launcher.
#
#   build.sh build     compile src/main to target/classes and package target/imago-client.jar
#   build.sh test      build, compile src/test, run every JUnit test (exit non-zero on failure)
#   build.sh example   build and run io.imago.client.example.Example
#
# JUnit: $JUNIT_JAR if set, else Debian's junit5 package
# (/usr/share/java/junit-platform-console-standalone.jar; apt-get install junit5).
# Broker for test/example: $IMAGO_BIN (default <repo>/target/debug/imago). The example uses
# $IMAGO_ADDR (host:port) when set, else starts $IMAGO_BIN on a free port.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="$here/target"
cmd="${1:-build}"

find_junit() {
  if [ -n "${JUNIT_JAR:-}" ]; then
    echo "$JUNIT_JAR"; return
  fi
  local jar=/usr/share/java/junit-platform-console-standalone.jar
  if [ ! -f "$jar" ] && command -v dpkg >/dev/null 2>&1; then
    jar="$(dpkg -L junit5 2>/dev/null | grep -m1 'junit-platform-console-standalone.*\.jar$' || true)"
  fi
  if [ -z "$jar" ] || [ ! -f "$jar" ]; then
    echo "build.sh: JUnit 5 console launcher not found; install it with 'apt-get install -y junit5' or set JUNIT_JAR" >&2
    exit 2
  fi
  echo "$jar"
}

build() {
  rm -rf "$target/classes"
  mkdir -p "$target/classes"
  find "$here/src/main/java" -name '*.java' > "$target/main-sources.txt"
  javac -encoding UTF-8 --release 17 -Xlint:all -Werror -d "$target/classes" @"$target/main-sources.txt"
  jar --create --file "$target/imago-client.jar" -C "$target/classes" .
  echo "built $target/imago-client.jar"
}

run_tests() {
  local junit
  junit="$(find_junit)"
  echo "JUnit console launcher: $junit"
  rm -rf "$target/test-classes"
  mkdir -p "$target/test-classes"
  find "$here/src/test/java" -name '*.java' > "$target/test-sources.txt"
  javac -encoding UTF-8 --release 17 -d "$target/test-classes" -cp "$target/classes:$junit" @"$target/test-sources.txt"
  export IMAGO_BIN="${IMAGO_BIN:-$repo/target/debug/imago}"
  if [ ! -x "$IMAGO_BIN" ]; then
    echo "build.sh: broker binary $IMAGO_BIN not found; build it with 'cargo build --bin imago' or set IMAGO_BIN" >&2
    exit 2
  fi
  echo "broker: $IMAGO_BIN"
  local colors=()
  [ -t 1 ] || colors=(--disable-ansi-colors)
  java -Dimago.bin="$IMAGO_BIN" -Dimago.client.dir="$here" -jar "$junit" \
    --class-path "$target/classes:$target/test-classes" \
    --scan-class-path "$target/test-classes" \
    --include-engine=junit-jupiter \
    --disable-banner --details=tree --fail-if-no-tests "${colors[@]}"
}

example_pid=""
example_dir=""
stop_example_broker() {
  if [ -n "$example_pid" ]; then
    kill "$example_pid" 2>/dev/null || true
    wait "$example_pid" 2>/dev/null || true
  fi
  if [ -n "$example_dir" ]; then
    rm -rf "$example_dir"
  fi
}

run_example() {
  local addr="${IMAGO_ADDR:-}" dir
  if [ -z "$addr" ]; then
    local bin="${IMAGO_BIN:-$repo/target/debug/imago}"
    dir="$(mktemp -d)"
    example_dir="$dir"
    trap stop_example_broker EXIT
    "$bin" --listen 127.0.0.1:0 --data-dir "$dir/data" --segment-bytes 8388608 >"$dir/out" 2>"$dir/err" &
    example_pid=$!
    for _ in $(seq 100); do
      addr="$(sed -n '1s/^imago .* listening on //p' "$dir/out")"
      [ -n "$addr" ] && break
      sleep 0.1
    done
    [ -n "$addr" ] || { echo "build.sh: broker did not start" >&2; cat "$dir/err" >&2; exit 1; }
    echo "started $bin on $addr"
  fi
  java -cp "$target/imago-client.jar" io.imago.client.example.Example "$addr" "${EXAMPLE_MESSAGES:-1000}"
}

case "$cmd" in
  build) build ;;
  test) build; run_tests ;;
  example) build; run_example ;;
  *) echo "usage: build.sh build|test|example" >&2; exit 2 ;;
esac
