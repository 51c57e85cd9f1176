#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds nestla's CUDA tests and benchmarks from source, runs them and PyTorch's counterparts, and prints one table, within about 8 minutes.
#
# Usage: benchmarks/gpu/device_check.sh [DEPS]
#   DEPS  header copies made by tools/gather_device_deps.sh (default: $NESTLA_DEPS, else third_party/)
# Environment:
#   NESTLA_SECTIONS   sections to run, in order (default: all of SECTIONS below)
#   NESTLA_BUILD_DIR  build folder (default: build-device/ in the repository)
#   NESTLA_CUDA_ARCH  CMAKE_CUDA_ARCHITECTURES (default: 90, H100/H200)
#   NESTLA_BUDGET_S   seconds for the whole run; a section that would start past it is skipped, the GPU
#                     probe excepted (default: 450)
#   NESTLA_JOBS       parallel build jobs (default: the number of cores)
#   NESTLA_PYTHON     the Python with PyTorch, also asked where pip's NCCL and cuDNN are (default: python3)
#   NCCL_ROOT         a prefix with include/nccl.h and lib/libnccl.so* (default: pip's nvidia-nccl-cu*
#                     package of NESTLA_PYTHON, else /usr/local/cuda, else /usr)
#   OUT               when set, the table, the RESULT lines and the logs (logs.tar.gz) are copied to $OUT/device_check/
# Exit status: 0 every section passed, 1 a section failed, 2 no GPU was found (after the build).
# The core build runs in the background (beside the trainer's); section_gpu waits for it.
# benchmarks/gpu/README.md: how to prepare, the device call, what each row means.
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
JOBS=${NESTLA_JOBS:-$(nproc 2>/dev/null || echo 4)}
PY=${NESTLA_PYTHON:-python3}
SECTIONS=(build gpu tests kernel_bench torch_bench)
BUILD_TARGETS=(test_cuda_host test_cuda_emulated test_cuda_device bench_optim)
NCCL_INC="" NCCL_LIB="" NCCL_VERSION=""   # set by section_build when NCCL is found
BUILD_PID="" BUILD_RC="" BUILD_T0=0       # section_build's background build (wait_build)
CUDA_FLAG_ARGS=()                          # -allow-unsupported-compiler when the host compiler needs it
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
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { if cmp "$1" "$2" "$3"; then echo ok; else echo MISSED; fi; }

# NCCL's include folder and library ("INC LIB"); nothing when none is found. pip's
# nvidia-nccl-cu* (the NCCL PyTorch loads, always there on the device) ships
# libnccl.so.2 only, which CMake's find_library does not take: hence this search.
find_nccl() {
  local d l
  local prefixes=("${NCCL_ROOT:-}")
  mapfile -t -O 1 prefixes < <("$PY" - 2> /dev/null << 'PY'
import importlib, os
for name in ("nvidia.nccl", "nvidia.cu13", "nvidia"):
    try:
        m = importlib.import_module(name)
    except Exception:
        continue
    for p in list(getattr(m, "__path__", None) or []):
        for sub in ("", "nccl", "cu13"):
            if os.path.isfile(os.path.join(p, sub, "include", "nccl.h")):
                print(os.path.normpath(os.path.join(p, sub)))
PY
  )
  prefixes+=(/usr/local/cuda /usr)
  for d in "${prefixes[@]}"; do
    [[ -n $d && -f $d/include/nccl.h ]] || continue
    for l in "$d"/lib/libnccl.so "$d"/lib64/libnccl.so "$d"/lib/x86_64-linux-gnu/libnccl.so \
             "$d"/lib/libnccl.so.2 "$d"/lib64/libnccl.so.2 "$d"/lib/x86_64-linux-gnu/libnccl.so.2; do
      [[ -f $l ]] && { echo "$d/include $l"; return 0; }
    done
  done
}

nccl_version() {
  awk '/^#define NCCL_(MAJOR|MINOR|PATCH) / { v[$2] = $3 } END { if (v["NCCL_MAJOR"] != "") print v["NCCL_MAJOR"] "." v["NCCL_MINOR"] "." v["NCCL_PATCH"] }' "$1/nccl.h"
}

section_build() {
  local deps
  if ! deps=$(cd "$DEPS_ARG" 2>/dev/null && pwd); then
    echo "dependency headers not found at $DEPS_ARG (run tools/gather_device_deps.sh where the packages are)"
    row "build" "no dependency headers at $DEPS_ARG" "" FAILED
    return 1
  fi
  if ! command -v nvcc > /dev/null; then
    if [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH=/usr/local/cuda/bin:$PATH; else echo "warning: nvcc is not on PATH"; fi
  fi
  local t0=$SECONDS
  local args=(-S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNESTLA_BUILD_TESTS=OFF -DNESTLA_BUILD_EXAMPLES=OFF
              -DNESTLA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_PREFIX_PATH="$deps")
  local nccl
  nccl=$(find_nccl)
  if [[ -n $nccl ]]; then
    read -r NCCL_INC NCCL_LIB <<< "$nccl"
    NCCL_VERSION=$(nccl_version "$NCCL_INC")
    echo "NCCL: ${NCCL_VERSION:-version unknown}, $NCCL_LIB (header in $NCCL_INC)"
    args+=(-DNESTLA_NCCL_INCLUDE_DIR="$NCCL_INC" -DNESTLA_NCCL_LIBRARY="$NCCL_LIB")
    LD_LIBRARY_PATH="${NCCL_LIB%/*}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
  else
    echo "NCCL: not found (NCCL_ROOT, $PY's nvidia.nccl, /usr/local/cuda, /usr): no test_nccl, no NCCL case in the GPU suite"
  fi
  if ! cmake "${args[@]}" > "$LOGS/configure.log" 2>&1; then
    # A host compiler newer than this nvcc supports: allow it, in a fresh cache.
    echo "configure failed; retrying with -allow-unsupported-compiler (see $LOGS/configure.log)"
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
    CUDA_FLAG_ARGS=(-DCMAKE_CUDA_FLAGS=-allow-unsupported-compiler)
    if ! cmake "${args[@]}" "${CUDA_FLAG_ARGS[@]}" > "$LOGS/configure.log" 2>&1; then
      tail -30 "$LOGS/configure.log"
      row "build: configure" "failed" "" FAILED
      return 1
    fi
  fi
  grep 'nestla:' "$LOGS/configure.log"
  if grep -q 'nestla: NCCL tests ON' "$LOGS/configure.log"; then
    [[ " ${BUILD_TARGETS[*]} " == *" test_nccl "* ]] || BUILD_TARGETS+=(test_nccl)
    row "NCCL (test_nccl, the GPU suite's one-worker case)" "${NCCL_VERSION:-?}: $NCCL_LIB" "" found
  else
    NCCL_LIB=""
    row "NCCL (test_nccl, the GPU suite's one-worker case)" "not found, or CMake did not take it (configure.log)" "found" MISSING
  fi
  # In the background, beside the trainer's build (each is mostly one long nvcc unit);
  # the first section that needs its programs waits for it (wait_build).
  BUILD_T0=$t0
  rm -f "$BUILD/build.rc"
  (cmake --build "$BUILD" -j "$JOBS" --target "${BUILD_TARGETS[@]}" > "$LOGS/build.log" 2>&1; echo $? > "$BUILD/build.rc") &
  BUILD_PID=$!
  echo "building ${BUILD_TARGETS[*]} in the background (pid $BUILD_PID, log $LOGS/build.log)"
}

# Waits for section_build's build and adds its row; nonzero when it failed.
wait_build() {
  [[ -n $BUILD_PID ]] || return "${BUILD_RC:-0}"
  wait "$BUILD_PID"
  BUILD_PID=""
  BUILD_RC=$(cat "$BUILD/build.rc" 2> /dev/null || echo 1)
  if ((BUILD_RC != 0)); then
    if grep -qE 'error|Error' "$LOGS/build.log"; then grep -E 'error|Error' "$LOGS/build.log" | head -30; else tail -15 "$LOGS/build.log"; fi
    row "build" "failed after $((SECONDS - BUILD_T0)) s" "" FAILED
    return 1
  fi
  row "build (${BUILD_TARGETS[*]})" "$((SECONDS - BUILD_T0)) s on $JOBS cores" "" ok
}

section_gpu() {
  if ! wait_build; then
    STOP=1   # nothing to run
    return 1
  fi
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
  # The kernel tells the machine's runtime (gVisor reports 4.4.0): compute-sanitizer works on Firecracker only.
  row "GPU" "$(sed -n 's/^GPU: //p' "$LOGS/gpu.log"); kernel $(uname -r)" "" ""
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=driver_version,clocks.max.mem --format=csv,noheader \
    | sed 's/^/driver, max memory clock: /'
  return 0
}

# One row per optimizer from test_cuda_device's "NAME depth D POLICY: max rel err E[, parameters
# bit-identical], whole state bit-identical|state differs" messages: GPU against host at every depth and policy.
gpu_agreement_rows() {
  awk '
    /MESSAGE: .* depth [0-9] [^:]*: max rel err / {
      line = $0; sub(/.*MESSAGE: /, "", line)
      name = line; sub(/ depth [0-9].*/, "", name)
      d = line; sub(/.* depth /, "", d); pol = d; sub(/^[0-9] /, "", pol); sub(/:.*/, "", pol); d = substr(d, 1, 1)
      e = line; sub(/.*max rel err /, "", e); sub(/,.*/, "", e)
      if (!(name in runs)) order[++n] = name
      runs[name]++; depths[name] = depths[name] (index(depths[name], d) ? "" : d)
      if (index(" " pols[name] " ", " " pol " ") == 0) pols[name] = pols[name] (pols[name] == "" ? "" : " ") pol
      if (!(name in worst) || e + 0 > worst[name] + 0) worst[name] = e
      if (line ~ /parameters bit-identical/) pbits[name]++
      if (line ~ /whole state bit-identical/) sbits[name]++
    }
    END {
      for (i = 1; i <= n; i++) {
        k = order[i]
        ds = depths[k]; gsub(/./, "&,", ds); sub(/,$/, "", ds)
        printf "%s\t%d runs (depths %s; policies %s): max rel err %s; parameters bit-identical %d/%d, whole state %d/%d\t%s\n",
               k, runs[k], ds, pols[k], worst[k], pbits[k], runs[k], sbits[k], runs[k], (worst[k] + 0 < 1e-6 ? "ok" : "MISSED")
      }
    }' "$1"
}

# "STATUS<TAB>SECONDS<TAB>NAME" per test case of a doctest log run with --duration=true.
doctest_cases() {
  awk '
    /^TEST CASE: / { name = $0; sub(/^TEST CASE: +/, "", name) }
    /: (ERROR|FATAL ERROR): / { if (name != "") bad[name] = 1 }
    /^[0-9.]+ s: / { t = $1; c = $0; sub(/^[0-9.]+ s: /, "", c); printf "%s\t%s\t%s\n", (c in bad ? "FAILED" : "ok"), t, c }
  ' "$1"
}

section_tests() {
  ctest --test-dir "$BUILD" -L cuda -LE gpu --output-on-failure --timeout 120 > "$LOGS/tests_host.log" 2>&1
  local rc_host=$?
  grep -E 'Test +#|tests passed' "$LOGS/tests_host.log"
  # --duration=true: one line per test case, so the table can say which ran and which failed.
  "$BUILD/tests/cuda/test_cuda_device" --duration=true > "$LOGS/test_cuda_device.log" 2>&1
  local rc_gpu=$?
  grep -E '^GPU:|ERROR|FAILED|^\[doctest\] (test cases|assertions)|returned after' "$LOGS/test_cuda_device.log" | head -40
  doctest_cases "$LOGS/test_cuda_device.log" > "$LOGS/gpu_cases.txt"
  sed 's/^/  /' "$LOGS/gpu_cases.txt"
  local cases same total
  cases=$(grep -E '^\[doctest\] test cases' "$LOGS/test_cuda_device.log" | sed 's/\[doctest\] test cases: *//; s/ *| */, /g')
  same=$(grep -c 'whole state bit-identical' "$LOGS/test_cuda_device.log")
  total=$(grep -c 'max rel err' "$LOGS/test_cuda_device.log")
  row "CUDA host-side and emulated-kernel tests" "$(grep -E '% tests passed' "$LOGS/tests_host.log" | tail -1)" "all pass" \
      "$( ((rc_host == 0)) && echo ok || echo FAILED)"
  if [[ -n $NCCL_LIB ]]; then
    row "NCCL host-side checks (test_nccl)" "$(grep -E 'Test +#[0-9]+: nccl_host ' "$LOGS/tests_host.log" | sed -E 's/.*nccl_host \.+ *//' | tr -s ' ')" \
        "Passed" "$(grep -qE 'nccl_host \.+ +Passed' "$LOGS/tests_host.log" && echo ok || echo FAILED)"
  fi
  row "GPU tests (test_cuda_device)" "${cases:-no summary (rc $rc_gpu)}; $same/$total runs bit-identical to the host" \
      "all pass; rel err < 1e-6" "$( ((rc_gpu == 0)) && echo ok || echo FAILED)"
  local name text status seen=""
  while IFS=$'\t' read -r name text status; do
    row "GPU = host: $name" "$text" "rel err < 1e-6" "$status"
    seen+="|$name|"
  done < <(gpu_agreement_rows "$LOGS/test_cuda_device.log")
  # Every base optimizer of the library (and outer momentum) must have had its rows.
  local missing=""
  for name in SGD "SGD momentum" "SGD nesterov" Adam "Adam amsgrad" AdamW "AdamW amsgrad" RAdam NAdam Adamax Lion \
              Adagrad Adadelta Rprop "RMSprop centered" "RMSprop momentum centered" "AdamW outer"; do
    [[ $seen == *"|$name|"* ]] || missing+="${missing:+, }$name"
  done
  [[ -n $missing ]] && row "GPU = host: optimizers with no result" "$missing" "none" FAILED
  local t pattern label
  for pattern in "gradient clipping on the GPU:clipping (norm 1, 2, 3, inf; by value): GPU = host" \
                 "clipping by norm does not wait:clipping by norm without a host wait" \
                 "NCCL, one worker:NCCL, one worker: distributed step = single-process bits"; do
    label=${pattern#*:}
    if IFS=$'\t' read -r status t _ < <(grep -F "${pattern%%:*}" "$LOGS/gpu_cases.txt" | head -1); then
      local text="test case: $t s"
      [[ $label == "clipping by norm without"* ]] &&
        text+="; a step $(grep -oE 'returned after [0-9.e+-]+ ms' "$LOGS/test_cuda_device.log" | head -1) while the stream was busy"
      row "GPU test: $label" "$text" "passes" "$status"
    elif [[ $label != NCCL* || -n $NCCL_LIB ]]; then
      row "GPU test: $label" "did not run" "passes" FAILED
    fi
  done
  local failed_cases
  failed_cases=$(awk -F'\t' '$1 == "FAILED" { printf "%s%s", sep, $3; sep = "; " }' "$LOGS/gpu_cases.txt")
  [[ -n $failed_cases ]] && row "GPU test cases that failed" "$failed_cases" "none" FAILED
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
  local adam
  adam=$(val adam_ms)
  row "Adam + clip_grad_norm (max_norm 1), no host wait" \
      "$(fmt "$(val adam_clip_norm_ms)" 4) ms = $(fmt "$(ratio "$(val adam_clip_norm_ms)" "$adam")" 3)x Adam" "bytes: 1.143x Adam"
  row "Adam + clip_grad_norm, error_if_nonfinite (waits for the GPU every step)" \
      "$(fmt "$(val adam_clip_norm_sync_ms)" 4) ms = $(fmt "$(ratio "$(val adam_clip_norm_sync_ms)" "$adam")" 3)x Adam"
  row "Adam + clip_grad_value (in the update pass)" \
      "$(fmt "$(val adam_clip_value_ms)" 4) ms = $(fmt "$(ratio "$(val adam_clip_value_ms)" "$adam")" 3)x Adam" "bytes: 1x Adam"
  row "AdamW step / SGD momentum step" "$(fmt "$(val adamw_ms)" 4) / $(fmt "$(val sgd_momentum_ms)" 4) ms" "bytes: 1x / 0.714x Adam"
  row "best tuning (vectors/thread, blocks/SM)" "$(val adam_best_vectors_per_thread), $(val adam_best_blocks_per_sm): $(fmt "$(val adam_best_ms)" 4) ms"
}

section_torch_bench() {
  "$PY" "$ROOT/benchmarks/gpu/torch_optim_bench.py" > "$LOGS/torch_optim.log" 2>&1
  local rc=$?
  cat "$LOGS/torch_optim.log"
  ((rc == 0)) || { row "PyTorch Adam" "not run (rc $rc): $(tail -1 "$LOGS/torch_optim.log")" "" FAILED; return 1; }
  collect "$LOGS/torch_optim.log"
  local fused foreach ours
  fused=$(val torch_adam_fused_ms) foreach=$(val torch_adam_foreach_ms) ours=$(val adam_ms)
  row "torch.optim.Adam fused / foreach" "$(fmt "$fused" 4) / $(fmt "$foreach" 4) ms (copy $(fmt "$(val torch_copy_GBps)" 0) GB/s)"
  if [[ -n $ours && -n $fused ]]; then
    local r
    r=$(ratio "$ours" "$fused")
    row "nestla Adam / torch fused Adam" "${r}x" "< 1" "$(verdict "$r" '<' 1)"
  fi
  # The same step with clipping, and the other fused optimizers: nestla's time / PyTorch's.
  local spec mine theirs label
  for spec in "adamw_ms torch_adamw_fused_ms AdamW (torch fused)" \
              "sgd_momentum_ms torch_sgd_momentum_fused_ms SGD momentum 0.9 (torch fused)" \
              "adam_clip_norm_ms torch_adam_clip_norm_ms Adam + clip_grad_norm (torch: clip_grad_norm_ foreach, fused Adam)" \
              "adam_clip_value_ms torch_adam_clip_value_ms Adam + clip_grad_value (torch: clip_grad_value_ foreach, fused Adam)"; do
    read -r mine theirs label <<< "$spec"
    local a b
    a=$(val "$mine") b=$(val "$theirs")
    r=$(ratio "$a" "$b")
    row "nestla / torch: $label" "$(fmt "$a" 4) / $(fmt "$b" 4) ms = $(fmt "$r" 3)x" "< 1" "$(verdict "$r" '<' 1)"
  done
}

# Not in the default SECTIONS (too slow to share a run with the benchmarks): compute-sanitizer's
# memcheck over the GPU suite, for a run of its own (NESTLA_SECTIONS="build gpu sanitizer").
# The cases that time a step against a busy stream are left out: memcheck slows every launch.
section_sanitizer() {
  local cases=${NESTLA_SANITIZER_CASES:-*} exclude=${NESTLA_SANITIZER_EXCLUDE:-*wait*}
  local t0=$SECONDS
  compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/tests/cuda/test_cuda_device" \
    --test-case="$cases" --test-case-exclude="$exclude" > "$LOGS/sanitizer.log" 2>&1
  local rc=$?
  grep -E 'ERROR SUMMARY|^\[doctest\] test cases|Invalid|out of bounds' "$LOGS/sanitizer.log" | head -20
  row "compute-sanitizer memcheck, test_cuda_device (cases '$cases', without '$exclude')" \
      "$(grep -oE 'ERROR SUMMARY: [0-9]+ errors?' "$LOGS/sanitizer.log" | tail -1); $(grep -E '^\[doctest\] test cases' "$LOGS/sanitizer.log" | sed 's/\[doctest\] test cases: *//; s/ *| */, /g'); $((SECONDS - t0)) s" \
      "0 errors" "$( ((rc == 0)) && echo ok || echo "FAILED (rc $rc)")"
  ((rc == 0))
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
  # The probe takes a second, and its "no GPU" is the dry run's answer: never skipped.
  if [[ $s != gpu ]] && (( SECONDS - START > BUDGET )); then
    echo "== $s: skipped, past the ${BUDGET} s budget"
    row "$s" "skipped (time budget)" "" SKIPPED
    continue
  fi
  echo "== $s ($((SECONDS - START)) s elapsed)"
  "section_$s" || failed=1
  # What is done so far survives a run stopped at its time limit.
  [[ -n ${OUT:-} ]] && mkdir -p "$OUT/device_check" && cp "$TABLE" "$RESULTS" "$OUT/device_check/"
done
wait_build || failed=1   # a run whose sections never needed the build (NESTLA_SECTIONS)
row "total time" "$((SECONDS - START)) s" "< 480 s" "$( ((SECONDS - START < 480)) && echo ok || echo MISSED)"

echo
echo "nestla device check, $(date -u '+%Y-%m-%d %H:%M UTC')"
cat "$TABLE"
if [[ -n ${OUT:-} ]]; then
  # The device tool brings back at most 8 files: the table, the RESULT lines and one archive of the logs.
  mkdir -p "$OUT/device_check"
  cp "$TABLE" "$RESULTS" "$OUT/device_check/"
  keep=(logs)
  [[ -f $BUILD/trainer/fmnist_metrics.jsonl ]] && keep+=(trainer/fmnist_metrics.jsonl)
  tar -czf "$OUT/device_check/logs.tar.gz" -C "$BUILD" "${keep[@]}"
fi
[[ -n $STOP ]] && exit "$STOP"
exit $failed
