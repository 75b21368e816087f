#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (coverage + ASan + UBSan) into build-fuzz/ and runs
# each for FUZZ_SECONDS (default 60) from its committed seed corpus, in a scratch copy (new
# inputs do not touch the repository). Exits non-zero on any finding (crash, leak, timeout,
# UBSan report); the finding's input is kept in build-fuzz/findings/.
#   tests/fuzz/run.sh [harness...]      default: all six
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"
secs=${FUZZ_SECONDS:-60}
harnesses=("$@")
[[ ${#harnesses[@]} -eq 0 ]] && harnesses=(fuzz_validation fuzz_config fuzz_store fuzz_index fuzz_remote_header fuzz_codec)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTENSORD_BUILD_TESTS=OFF -DTENSORD_FUZZ=ON -DTENSORD_WITH_CUDA=OFF \
  -DTENSORD_SANITIZE=fuzzer-no-link,address,undefined >/dev/null
cmake --build build-fuzz -j "${JOBS:-2}" --target "${harnesses[@]}"

mkdir -p build-fuzz/findings
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for h in "${harnesses[@]}"; do
  corpus=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$h/." "$corpus/"
  log=build-fuzz/findings/$h.log
  extra=()
  # fuzz_codec: payloads beyond one 64 KiB checksum segment (libFuzzer's default is 4 KiB).
  [[ $h == fuzz_codec ]] && extra=(-max_len=200000)
  if build-fuzz/tests/fuzz/"$h" "$corpus" "${extra[@]}" -max_total_time="$secs" -timeout=10 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=build-fuzz/findings/"$h"- \
      >"$log" 2>&1; then
    runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    echo "fuzz: $h: ${runs:-?} inputs in ${secs}s, no findings ($(ls "$corpus" | wc -l) in corpus)"
  else
    echo "fuzz: $h: FINDING (see $log and build-fuzz/findings/)"
    tail -40 "$log"
    status=1
  fi
  rm -rf "$corpus"
done
exit $status
