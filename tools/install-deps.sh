#!/usr/bin/env bash
# Installs the Debian packages that nestla's build, tests and examples need; does nothing when they are there.
set -euo pipefail
packages=(
  build-essential cmake            # compiler and build
  clang-14 libclang-rt-14-dev      # CI's second build: clang with ASan, UBSan and libFuzzer (fuzz/)
  libxsimd-dev                     # the core's explicit SIMD
  doctest-dev                      # tests
  libeigen3-dev xtensor-dev        # container adaptors and the ResNet-18 example
  libarmadillo-dev                 # the Armadillo adaptor and the ensmallen/mlpack adaptor
  libdnnl-dev ocl-icd-opencl-dev   # the example's fast CPU convolutions (oneDNN; its CMake package needs OpenCL's)
  zlib1g-dev nlohmann-json3-dev libcli11-dev   # the example's data, metrics and command line
  dataset-fashion-mnist            # real data for the example
  openmpi-bin libopenmpi-dev       # distributed training over MPI: its tests and example
  libbenchmark-dev                 # benchmarks
  python3 python3-matplotlib       # the experiment runner's plots
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
