#!/usr/bin/env bash
# Copies the header-only dependencies of nestla's builds from this machine (Debian packages) into a folder to carry to a machine without them, such as the GPU device.
#
# Usage: tools/gather_device_deps.sh [DEST]     (default: third_party/ in the repository, ignored by git)
# Then, there:  cmake -DCMAKE_PREFIX_PATH=DEST ...   or   benchmarks/gpu/device_check.sh DEST
# Headers land in DEST/include/ (Eigen under DEST/include/eigen3/, as Debian lays it out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/third_party}
mkdir -p "$DEST/include"
DEST=$(cd "$DEST" && pwd)

# name in DEST/include <- source folder, Debian package (for the version note)
deps=(
  "xsimd /usr/include/xsimd libxsimd-dev"
  "xtl /usr/include/xtl xtl-dev"
  "doctest /usr/include/doctest doctest-dev"
  "eigen3 /usr/include/eigen3 libeigen3-dev"
  "xtensor /usr/include/xtensor xtensor-dev"
  "nlohmann /usr/include/nlohmann nlohmann-json3-dev"
  "CLI /usr/include/CLI libcli11-dev"
)
missing=0
: > "$DEST/VERSIONS.txt"
for d in "${deps[@]}"; do
  read -r name src pkg <<< "$d"
  if [[ ! -d $src ]]; then
    echo "missing: $src (Debian package $pkg)" >&2
    missing=1
    continue
  fi
  rm -rf "${DEST:?}/include/$name"
  cp -a "$src" "$DEST/include/$name"
  version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || echo unknown)
  echo "$name $pkg $version" >> "$DEST/VERSIONS.txt"
done
echo "headers in $DEST/include ($(du -sh "$DEST" | cut -f1)):"
sed 's/^/  /' "$DEST/VERSIONS.txt"
exit $missing
