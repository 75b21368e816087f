#!/usr/bin/env bash
# `cmake --install` of the build into a fresh prefix, then two programs outside the tree built
# against it — one with find_package(tensord), one with pkg-config — run against the installed
# tensord.   consumer_test.sh BUILD_DIR
set -euo pipefail
build=$(realpath "${1:?usage: consumer_test.sh BUILD_DIR}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d /var/tmp/tensord-consumer.XXXXXX)
daemon_pid=""
cleanup() {
  [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >"$work/install.log"
test -x "$prefix/bin/tensord" && test -x "$prefix/bin/tensorctl"
test -f "$prefix/include/tensord/client.h"
test -f "$prefix/lib/systemd/system/tensord.service"
grep -q "ExecStart=$prefix/bin/tensord --config $prefix/etc/tensord/tensord.toml" \
  "$prefix/lib/systemd/system/tensord.service"

# Nothing from this build machine's CUDA toolkit reaches a consumer's link line: the CUDA
# runtime's objects are inside libtensord_common.a.
if grep -qi cuda "$prefix/lib/pkgconfig/tensord.pc" "$prefix"/lib/cmake/tensord/*.cmake; then
  echo "consumer_test: the installed tensord.pc or CMake files name CUDA:" >&2
  grep -i cuda "$prefix/lib/pkgconfig/tensord.pc" "$prefix"/lib/cmake/tensord/*.cmake >&2
  exit 1
fi

cmake -S "$here/consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$work/configure.log"
cmake --build "$work/cmake-build" >"$work/build.log"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# shellcheck disable=SC2046
g++ -std=c++20 -O1 "$here/consumer/main.cc" -o "$work/consumer-pc" \
  $(pkg-config --cflags --libs tensord)

"$prefix/bin/tensord" --run-dir "$work/run" --host-capacity 64MiB --no-prefault \
  --log-level warn &
daemon_pid=$!
for _ in $(seq 100); do [[ -S $work/run/tensord.sock ]] && break; sleep 0.1; done
"$work/cmake-build/consumer" "$work/run/tensord.sock"
"$work/consumer-pc" "$work/run/tensord.sock"
"$prefix/bin/tensorctl" --socket "$work/run/tensord.sock" health >/dev/null
echo "consumer_test: find_package and pkg-config consumers work against the installed tree"
