#!/usr/bin/env bash
# Copies the header-only dependencies of nestla's builds from this machine (Debian packages) into a folder to carry to a machine without them, such as the GPU device.
#
# Usage: tools/gather_device_deps.sh [DEST]     (default: third_party/ in the repository, ignored by git)
# Then, there:  cmake -DCMAKE_PREFIX_PATH=DEST ...   or   benchmarks/gpu/device_check.sh DEST
# Headers land in DEST/include/ (Eigen under DEST/include/eigen3/, as Debian lays it out), zlib's
# among them; Fashion-MNIST's four .gz files in DEST/fashion-mnist/ when this machine has them.
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
# zlib's two headers (zlib1g-dev) for the GPU trainer: the device has the library, not the headers.
for h in zlib.h zconf.h; do
  if [[ -f /usr/include/$h ]]; then
    cp /usr/include/$h "$DEST/include/"
  else
    echo "missing: /usr/include/$h (Debian package zlib1g-dev)" >&2
    missing=1
  fi
done
echo "zlib zlib1g-dev $(dpkg-query -W -f='${Version}' zlib1g-dev 2>/dev/null || echo unknown)" >> "$DEST/VERSIONS.txt"
# Fashion-MNIST for the trainer's one-epoch GPU run (device_check.sh skips that row without it).
FMNIST=${NESTLA_FASHION_MNIST_SRC:-/usr/share/datasets/fashion-mnist}
if compgen -G "$FMNIST/*.gz" > /dev/null; then
  mkdir -p "$DEST/fashion-mnist"
  cp "$FMNIST"/*.gz "$DEST/fashion-mnist/"
  echo "fashion-mnist: $(ls "$DEST/fashion-mnist" | wc -l) files from $FMNIST"
else
  echo "no Fashion-MNIST at $FMNIST (NESTLA_FASHION_MNIST_SRC): the trainer's GPU run will be skipped"
fi
echo "headers in $DEST/include, $(du -sh "$DEST" | cut -f1) in all (the device tool carries 64 MiB with the tree):"
sed 's/^/  /' "$DEST/VERSIONS.txt"
exit $missing
