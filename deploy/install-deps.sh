#!/usr/bin/env bash
# Installs the Debian bookworm packages tensord needs to build, run and test.
# Idempotent: packages already present are left alone; apt-get update runs only when needed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libboost-dev                       # Boost.Interprocess (header-only)
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev
  liburing-dev
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  libtomlplusplus-dev
  libcli11-dev
  libxxhash-dev libzstd-dev
  libeigen3-dev                      # the low-rank codec (SVD)
  libhiredis-dev                     # the remote tier's Redis client
  redis-server redis-tools           # the remote tier's tests and benchmark (a real Redis 7)
  nlohmann-json3-dev                 # the trace benchmark reads JSON-lines traces
  # Python binding and its tests (client/python): the system Python's packages.
  python3-dev pybind11-dev libdlpack-dev python3-numpy python3-torch python3-pytest
  libopenblas0-pthread               # torch's BLAS: Debian's default is the reference BLAS,
                                     # 10-20x slower on the model's matmuls
  python3-matplotlib                 # the model benchmark's plot (tests/bench/qwen3vl_bench.py)
  fio                                # the SSD benchmark's reference
  prometheus-cpp-dev                 # the /metrics endpoint
  libsystemd-dev systemd             # sd_notify (Type=notify), systemd-analyze verify
  systemd-container debootstrap dpkg-dev  # the packaged-service test (nspawn) and CPack .deb
  lintian help2man                   # Debian's checks of the .deb; man pages from --help
  clang libclang-rt-14-dev           # the libFuzzer harnesses (tests/fuzz/run.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
