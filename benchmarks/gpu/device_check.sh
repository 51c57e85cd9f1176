#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds nestla's CUDA tests and benchmarks from source, runs them and PyTorch's counterparts, and prints one table, within about 8 minutes.
#
# Usage: benchmarks/gpu/device_check.sh [DEPS]
#   DEPS  header copies made by tools/gather_device_deps.sh (default: $NESTLA_DEPS, else third_party/)
# Environment:
#   NESTLA_SECTIONS   sections to run, in order (default: all of SECTIONS below)
#   NESTLA_BUILD_DIR  build folder (default: build-device/ in the repository)
#   NESTLA_CUDA_ARCH  CMAKE_CUDA_ARCHITECTURES (default: 90, H100/H200)
#   NESTLA_BUDGET_S   seconds for the whole run; a section that would start past it is skipped (default: 450)
#   OUT               when set, the table and the logs are copied to $OUT/device_check/
# Exit status: 0 every section passed, 1 a section failed, 2 no GPU was found (after the build).
#
# Each section is a function section_<name> that adds rows to the table with
# `row` and returns nonzero when it failed; benchmark programs print
# "RESULT key value" lines, collected by `collect` and read back with `val`.
# To add a section (the trainer's, say), define section_<name> below and add
# <name> to SECTIONS, with its CMake targets in BUILD_TARGETS.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEPS_ARG=${1:-${NESTLA_DEPS:-$ROOT/third_party}}
BUILD=${NESTLA_BUILD_DIR:-$ROOT/build-device}
ARCH=${NESTLA_CUDA_ARCH:-90}
BUDGET=${NESTLA_BUDGET_S:-450}
JOBS=$(nproc 2>/dev/null || echo 4)
SECTIONS=(build gpu tests kernel_bench torch_bench)
BUILD_TARGETS=(test_cuda_host test_cuda_emulated test_cuda_device bench_optim)
[[ -n ${NESTLA_SECTIONS:-} ]] && read -r -a SECTIONS <<< "$NESTLA_SECTIONS"

LOGS=$BUILD/logs
RESULTS=$BUILD/results.txt
TABLE=$BUILD/table.md
START=$SECONDS
STOP=""   # set by a section to end the run early (no GPU)

mkdir -p "$LOGS"
: > "$RESULTS"
printf '| check | result | target | status |\n|---|---|---|---|\n' > "$TABLE"

row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "${3:-}" "${4:-}" >> "$TABLE"; }
collect() { grep '^RESULT ' "$1" | cut -d' ' -f2- >> "$RESULTS"; }
val() { awk -v k="$1" '$1 == k { v = $2 } END { if (v != "") print v }' "$RESULTS"; }
# fmt VALUE DIGITS; cmp A OP B (floating point, awk)
fmt() { [[ -n $1 ]] && printf "%.${2}f" "$1" || printf 'n/a'; }
cmp() { [[ -n $1 && -n $3 ]] && awk -v a="$1" -v b="$3" "BEGIN { exit !(a $2 b) }"; }
verdict() { if cmp "$1" "$2" "$3"; then echo ok; else echo MISSED; fi; }

section_build() {
  local deps
  if ! deps=$(cd "$DEPS_ARG" 2>/dev/null && pwd); then
    echo "dependency headers not found at $DEPS_ARG (run tools/gather_device_deps.sh where the packages are)"
    row "build" "no dependency headers at $DEPS_ARG" "" FAILED
    return 1
  fi
  command -v nvcc > /dev/null || [[ -x /usr/local/cuda/bin/nvcc ]] || echo "warning: nvcc is not on PATH"
  local t0=$SECONDS
  local args=(-S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNESTLA_BUILD_TESTS=OFF -DNESTLA_BUILD_EXAMPLES=OFF
              -DNESTLA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_PREFIX_PATH="$deps")
  if ! cmake "${args[@]}" > "$LOGS/configure.log" 2>&1; then
    # A host compiler newer than this nvcc supports: allow it, in a fresh cache.
    echo "configure failed; retrying with -allow-unsupported-compiler (see $LOGS/configure.log)"
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
    if ! cmake "${args[@]}" -DCMAKE_CUDA_FLAGS=-allow-unsupported-compiler > "$LOGS/configure.log" 2>&1; then
      tail -30 "$LOGS/configure.log"
      row "build: configure" "failed" "" FAILED
      return 1
    fi
  fi
  grep 'nestla:' "$LOGS/configure.log"
  if ! cmake --build "$BUILD" -j "$JOBS" --target "${BUILD_TARGETS[@]}" > "$LOGS/build.log" 2>&1; then
    grep -E 'error|Error' "$LOGS/build.log" | head -30
    row "build" "failed after $((SECONDS - t0)) s" "" FAILED
    return 1
  fi
  row "build (${BUILD_TARGETS[*]})" "$((SECONDS - t0)) s on $JOBS cores" "" ok
}

section_gpu() {
  local probe=$BUILD/benchmarks/gpu/bench_optim
  "$probe" --probe > "$LOGS/gpu.log" 2>&1
  local rc=$?
  cat "$LOGS/gpu.log"
  if ((rc == 2)); then
    echo "No GPU on this machine: the build is done, stopping before the GPU sections."
    row "GPU" "none found ($(head -1 "$LOGS/gpu.log"))" "" "NO GPU"
    STOP=2
    return 0
  fi
  ((rc == 0)) || { row "GPU" "probe failed (rc $rc)" "" FAILED; return 1; }
  row "GPU" "$(sed -n 's/^GPU: //p' "$LOGS/gpu.log")" "" ""
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=driver_version,clocks.max.mem --format=csv,noheader \
    | sed 's/^/driver, max memory clock: /'
  return 0
}

section_tests() {
  ctest --test-dir "$BUILD" -L cuda -LE gpu --output-on-failure --timeout 120 > "$LOGS/tests_host.log" 2>&1
  local rc_host=$?
  grep -E 'Test +#|tests passed' "$LOGS/tests_host.log"
  "$BUILD/tests/cuda/test_cuda_device" > "$LOGS/test_cuda_device.log" 2>&1
  local rc_gpu=$?
  grep -E '^GPU:|ERROR|FAILED|^\[doctest\] (test cases|assertions)|returned after' "$LOGS/test_cuda_device.log" | head -40
  local cases same total
  cases=$(grep -E '^\[doctest\] test cases' "$LOGS/test_cuda_device.log" | sed 's/\[doctest\] test cases: *//' | tr -s ' ' | tr '|' ',')
  same=$(grep -c 'whole state bit-identical' "$LOGS/test_cuda_device.log")
  total=$(grep -c 'max rel err' "$LOGS/test_cuda_device.log")
  row "CUDA host-side and emulated-kernel tests" "$(grep -E '% tests passed' "$LOGS/tests_host.log" | tail -1)" "all pass" \
      "$( ((rc_host == 0)) && echo ok || echo FAILED)"
  row "GPU tests (test_cuda_device)" "${cases:-no summary (rc $rc_gpu)}; $same/$total runs bit-identical to the host" \
      "all pass; rel err < 1e-6" "$( ((rc_gpu == 0)) && echo ok || echo FAILED)"
  ((rc_host == 0 && rc_gpu == 0))
}

section_kernel_bench() {
  "$BUILD/benchmarks/gpu/bench_optim" > "$LOGS/bench_optim.log" 2>&1
  local rc=$?
  cat "$LOGS/bench_optim.log"
  ((rc == 0)) || { row "bench_optim" "failed (rc $rc)" "" FAILED; return 1; }
  collect "$LOGS/bench_optim.log"
  row "device copy bandwidth (D2D, 358 MB moved)" "$(fmt "$(val copy_GBps)" 0) GB/s (cudaMemcpy $(fmt "$(val copy_memcpy_GBps)" 0), kernel $(fmt "$(val copy_kernel_GBps)" 0))"
  row "Adam step, ResNet-18 set (11.17M floats, 62 tensors)" \
      "$(fmt "$(val adam_ms)" 4) ms, $(fmt "$(val adam_GBps)" 0) GB/s = $(fmt "$(val adam_pct_copy)" 1)% of copy" \
      ">= 85% of copy" "$(verdict "$(val adam_pct_copy)" '>=' 85)"
  row "Lookahead(Lookahead(Adam)) k=s=5, amortized" "$(fmt "$(val la2_ratio)" 3)x Adam ($(fmt "$(val la2_ms)" 4) ms)" \
      "<= 1.08x (floor $(fmt "$(val la2_floor)" 3)x)" "$(verdict "$(val la2_ratio)" '<=' 1.08)"
  row "step syncing both levels (44 B/element)" "$(fmt "$(val sync_every_GBps)" 0) GB/s"
  row "best tuning (vectors/thread, blocks/SM)" "$(val adam_best_vectors_per_thread), $(val adam_best_blocks_per_sm): $(fmt "$(val adam_best_ms)" 4) ms"
}

section_torch_bench() {
  python3 "$ROOT/benchmarks/gpu/torch_optim_bench.py" > "$LOGS/torch_optim.log" 2>&1
  local rc=$?
  cat "$LOGS/torch_optim.log"
  ((rc == 0)) || { row "PyTorch Adam" "not run (rc $rc): $(tail -1 "$LOGS/torch_optim.log")" "" FAILED; return 1; }
  collect "$LOGS/torch_optim.log"
  local fused foreach ours
  fused=$(val torch_adam_fused_ms) foreach=$(val torch_adam_foreach_ms) ours=$(val adam_ms)
  row "torch.optim.Adam fused / foreach" "$(fmt "$fused" 4) / $(fmt "$foreach" 4) ms (copy $(fmt "$(val torch_copy_GBps)" 0) GB/s)"
  if [[ -n $ours && -n $fused ]]; then
    local ratio
    ratio=$(awk -v a="$ours" -v b="$fused" 'BEGIN { printf "%.3f", a / b }')
    row "nestla Adam / torch fused Adam" "${ratio}x" "< 1" "$(verdict "$ratio" '<' 1)"
  fi
}

# ---- ResNet-18 GPU trainer: sections trainer_build, trainer_tests, trainer_bench, trainer_torch and
# trainer_run live in trainer_check.sh (kept by the trainer's authors), which also puts them in SECTIONS.
[[ -f $ROOT/benchmarks/gpu/trainer_check.sh ]] && source "$ROOT/benchmarks/gpu/trainer_check.sh"

failed=0
for s in "${SECTIONS[@]}"; do
  [[ -n $STOP ]] && break
  if ! declare -F "section_$s" > /dev/null; then
    echo "unknown section: $s"
    failed=1
    continue
  fi
  if (( SECONDS - START > BUDGET )); then
    echo "== $s: skipped, past the ${BUDGET} s budget"
    row "$s" "skipped (time budget)" "" SKIPPED
    continue
  fi
  echo "== $s ($((SECONDS - START)) s elapsed)"
  "section_$s" || failed=1
done
row "total time" "$((SECONDS - START)) s" "< 480 s" "$( ((SECONDS - START < 480)) && echo ok || echo MISSED)"

echo
echo "nestla device check, $(date -u '+%Y-%m-%d %H:%M UTC')"
cat "$TABLE"
if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT/device_check"
  cp "$TABLE" "$RESULTS" "$OUT/device_check/"
  cp "$LOGS"/*.log "$OUT/device_check/" 2>/dev/null
fi
[[ -n $STOP ]] && exit "$STOP"
exit $failed
