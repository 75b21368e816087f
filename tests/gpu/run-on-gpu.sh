#!/usr/bin/env bash
# The GPU checks of issue 4, for a machine with an NVIDIA GPU and driver but none of our
# packages. Here (the build machine):
#   tests/gpu/run-on-gpu.sh bundle        # packs the programs into .gpu-bundle/ (git-ignored)
# There (the repository copy, with .gpu-bundle/ carried along):
#   tests/gpu/run-on-gpu.sh run [OUT]     # nvidia-smi, the GPU unit and integration tests,
#                                         # gpu_bench; everything also written under OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=.gpu-bundle
case "${1:-}" in
  bundle)
    build=${BUILD:-build}
    ../shared/tools/gpu-bundle.sh "$bundle" "$build/daemon/tensord" \
      "$build/tests/integration/daemon_test" "$build/tests/integration/it_client" \
      "$build/tests/unit/gpu_test" "$build/tests/bench/gpu_bench" "$build/client/tensorctl"
    strip --strip-debug "$bundle"/bin/* "$bundle"/lib/* 2>/dev/null || true  # the device run
                                                                          # carries at most 64 MiB
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$bundle/" "$exclude" 2>/dev/null || echo "/$bundle/" >> "$exclude"
    du -sh "$bundle"
    ;;
  run)
    out=${2:-${OUT:-/tmp/tensord-gpu-out}}
    mkdir -p "$out"
    # shellcheck disable=SC1091
    source "$bundle/env.sh"
    export TENSORD_BIN="$PWD/$bundle/bin/tensord" IT_CLIENT_BIN="$PWD/$bundle/bin/it_client"
    rc=0
    { nvidia-smi || true; } 2>&1 | tee "$out/nvidia-smi.txt"
    gpu_test 2>&1 | tee "$out/gpu_unit.txt" || rc=1
    daemon_test --gtest_filter='GpuTier.*:Daemon.TwoProcesses*:Daemon.KillNine*' 2>&1 \
      | tee "$out/gpu_integration.txt" || rc=1
    gpu_bench 2>&1 | tee "$out/gpu_bench.txt" || rc=1
    exit $rc
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
