#!/usr/bin/env bash
# Builds nestla_bench in two flavours (-O3 -march=native; plain -O2), runs it and the PyTorch script, prints the markdown tables.
#
#   benchmarks/run.sh                      everything (about 30 minutes on the 2-core development machine)
#   REPS=3 FILTER='steps/Adam' TORCH_FILTER='Adam' benchmarks/run.sh   a part, fewer repetitions
#   TORCH_PYTHONS='/usr/bin/python3 /tmp/venv/bin/python' benchmarks/run.sh   more than one PyTorch
#   PAIRED=0 benchmarks/run.sh             without the paired nestla/torch runs (PAIRED_FILTER=Rprop: only some)
#
# Output: $OUT (default build-bench-results/ in the repository) holds the JSON and tables.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${OUT:-$root/build-bench-results}
reps=${REPS:-5}
min_time=${MIN_TIME:-0.3}
filter=${FILTER:-.}
torch_pythons=${TORCH_PYTHONS:-/usr/bin/python3}
torch_filter=${TORCH_FILTER:-}
jobs=${JOBS:-2}
mkdir -p "$out"

# Plain flags on purpose: a header-only library runs with its users' flags.
# CMAKE_BUILD_TYPE=None adds nothing to CMAKE_CXX_FLAGS.
declare -A flags=([O3-native]="-O3 -march=native" [O2]="-O2")
flavour_args=()
for flavour in O3-native O2; do
  build=$out/build-$flavour
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=${flags[$flavour]}" \
    -DNESTLA_BUILD_BENCHMARKS=ON -DNESTLA_BUILD_TESTS=OFF -DNESTLA_BUILD_EXAMPLES=OFF -DNESTLA_CUDA=OFF >/dev/null
  cmake --build "$build" --target nestla_bench -j"$jobs" >/dev/null
  echo "== nestla_bench, $flavour (${flags[$flavour]})" >&2
  # Huge pages for the benchmark's own tensors (std::vector, Eigen, xtensor), as for the roofline's buffers, nestla's
  # state and PyTorch below: with 4 KiB pages for p and g only, Adam measured 5 to 9 points lower against a
  # roofline on huge pages (RESULTS.md), a difference of page size, not of the step.
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$build/benchmarks/nestla_bench" --benchmark_filter="$filter" --benchmark_repetitions="$reps" \
    --benchmark_report_aggregates_only=true --benchmark_min_time="$min_time" \
    --benchmark_out="$out/nestla-$flavour.json" --benchmark_out_format=json >&2
  flavour_args+=(--flavour "$flavour (${flags[$flavour]})=$out/nestla-$flavour.json")
done

torch_args=()
i=0
for py in $torch_pythons; do
  if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "== $py has no torch: skipped" >&2
    continue
  fi
  i=$((i + 1))
  echo "== torch_optim_bench.py with $py" >&2
  # Without huge pages, PyTorch's per-step temporaries page-fault and the
  # comparison would flatter nestla (design/perf-notes.md).
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$py" "$here/torch_optim_bench.py" --shapes "$here/resnet18_shapes.txt" \
    --reps "$reps" --min-time "$min_time" --filter "$torch_filter" --out "$out/torch-$i.json"
  torch_args+=(--torch "$out/torch-$i.json")
done

# --- nestla and torch.optim paired in one process (torch_paired_bench.py): both flavours, every Python ---
paired_args=()
if [ -n "${PAIRED:-1}" ] && [ "${PAIRED:-1}" != 0 ]; then
  for flavour in O3-native O2; do
    build=$out/build-$flavour
    cmake --build "$build" --target nestla_steps -j"$jobs" >/dev/null
    i=0
    for py in $torch_pythons; do
      "$py" -c 'import torch' 2>/dev/null || continue
      i=$((i + 1))
      echo "== torch_paired_bench.py with $py, nestla $flavour" >&2
      GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$py" "$here/torch_paired_bench.py" --lib "$build/benchmarks/libnestla_steps.so" \
        --shapes "$here/resnet18_shapes.txt" --filter "${PAIRED_FILTER:-}" --out "$out/paired-$flavour-$i.json"
      paired_args+=(--paired "$flavour (${flags[$flavour]})=$out/paired-$flavour-$i.json")
    done
  done
fi
# --- end of paired ---

{
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
    "compiler: $(${CXX:-c++} --version | head -1); command: benchmarks/run.sh (REPS=$reps MIN_TIME=$min_time)"
  echo
  python3 "$here/report.py" "${flavour_args[@]}" "${torch_args[@]}" "${paired_args[@]}"
} | tee "$out/tables.md"
