#!/usr/bin/env bash
# The README's two commands. From a fresh Debian bookworm machine:
#   deploy/quickstart.sh run  [tensord flags...]   install, build, run the daemon in the foreground
#   deploy/quickstart.sh test [--sanitize address,undefined|thread] [ctest args...]
#                                                 install, build, run every test (or those
#                                                 the ctest arguments select, e.g. -L unit)
# Builds go to build/ (or build-<sanitizer>/), with Ninja and -j2 by default (JOBS=N overrides);
# ctest runs two tests at a time (CTEST_JOBS=N overrides).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

mode=${1:-}
[[ -n $mode ]] && shift
sanitize=""
if [[ $mode == test && ${1:-} == --sanitize ]]; then
  sanitize=${2:?--sanitize needs a value}
  shift 2
fi

"$here/deploy/install-deps.sh"

build_dir=build
[[ -n $sanitize ]] && build_dir="build-${sanitize//,/-}"
jobs=${JOBS:-2}

configure_and_build() {
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTENSORD_SANITIZE="$sanitize" -DTENSORD_BUILD_TESTS=ON >/dev/null
  cmake --build "$build_dir" -j "$jobs"
}

case $mode in
  run)
    configure_and_build
    mkdir -p run
    echo "quickstart: starting tensord (socket run/tensord.sock, 1 GiB host tier); Ctrl-C stops it"
    exec "$build_dir/daemon/tensord" --run-dir run "$@"
    ;;
  test)
    configure_and_build
    if [[ -n $sanitize ]]; then
      # Debian's gRPC is not instrumented; LSan still reports our own leaks.
      export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
      export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
      # TSan: Debian's abseil is made visible by wrappers (common/tsan_abseil.cc); the few
      # suppressions in tests/tsan.supp are for other uninstrumented libraries, each justified.
      # ignore_noninstrumented_modules: memcpy/malloc/strlen called from inside Debian's
      # uninstrumented gRPC core, upb, abseil status/cord/strings are not checked. Those libraries
      # hand buffers between their threads through their own atomics (the completion queue), which
      # TSan cannot see, so each such access "races" with the one before it (some 900 reports over
      # the integration tests, none in our code). Our own code is checked in full, its memcpy too.
      export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$PWD/tests/tsan.supp}
    fi
    cd "$build_dir"
    # Tests are independent (own run directories, sockets, ports, segments): two at a time.
    ctest --output-on-failure --timeout 600 -j "${CTEST_JOBS:-2}" "$@"
    ;;
  *)
    sed -n '2,7p' "$0"
    exit 2
    ;;
esac
