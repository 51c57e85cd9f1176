#!/usr/bin/env bash
# Sections of benchmarks/gpu/device_check.sh for the ResNet-18 GPU trainer (sourced by it; uses its row/collect/val helpers).
# =============================================================================
# ResNet-18 GPU trainer (examples/resnet18/cuda): its own build, the GPU-vs-CPU tests,
# throughput against PyTorch's ResNet-18 and a short real run. Apart from the optimizer
# sections of device_check.sh, it builds in $BUILD/trainer (examples ON) from the same
# header copies, plus small CMake package files written here for the header-only ones.
# Extra inputs: cuDNN 9 (CUDNN_ROOT, else /usr/local/cuda, else the pip package
# nvidia-cudnn-cu*), zlib.h (the system's or DEPS/include/zlib.h), Fashion-MNIST's four
# .gz files in NESTLA_FASHION_MNIST (default: $ROOT/third_party/fashion-mnist) for the run.
# =============================================================================
TRAINER_BUILD=$BUILD/trainer
TRAINER_BIN=$TRAINER_BUILD/examples/resnet18/cuda
TRAINER_BATCH=${NESTLA_TRAINER_BATCH:-512}
TRAINER_TARGETS=(resnet18_gpu_host_tests resnet18_gpu_tests resnet18_gpu_bench resnet18_train)
[[ -z ${NESTLA_SECTIONS:-} ]] &&
  SECTIONS=(build trainer_build gpu tests kernel_bench torch_bench trainer_tests trainer_bench trainer_torch trainer_run)

# A prefix with include/cudnn.h and the library, printed; nothing when none is found.
trainer_find_cudnn() {
  local d
  for d in "${CUDNN_ROOT:-}" /usr/local/cuda /usr; do
    [[ -n $d && -f $d/include/cudnn.h ]] || continue
    compgen -G "$d/lib*/libcudnn.so*" > /dev/null || compgen -G "$d/lib/x86_64-linux-gnu/libcudnn.so*" > /dev/null ||
      continue
    echo "$d"
    return 0
  done
  "${PY:-python3}" - 2> /dev/null << 'PY'
import importlib, os
try:
    m = importlib.import_module("nvidia.cudnn")
    paths = list(getattr(m, "__path__", None) or []) or [os.path.dirname(m.__file__)]
except Exception:
    paths = []
for p in paths:
    if os.path.isfile(os.path.join(p, "include", "cudnn.h")):
        print(p)
        break
PY
}

# CMake package files for header-only copies (nlohmann_json, CLI11, Eigen3, doctest).
trainer_write_shim() {
  local s=$1 inc=$2
  mkdir -p "$s"
  local spec name target version dir
  for spec in "nlohmann_json nlohmann_json::nlohmann_json 3.11.2 $inc" "CLI11 CLI11::CLI11 2.3.1 $inc" \
              "Eigen3 Eigen3::Eigen 3.4.0 $inc/eigen3" "doctest doctest::doctest 2.4.9 $inc"; do
    read -r name target version dir <<< "$spec"
    printf 'if(NOT TARGET %s)\n  add_library(%s INTERFACE IMPORTED)\n  set_target_properties(%s PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "%s")\nendif()\n' \
      "$target" "$target" "$target" "$dir" > "$s/${name}Config.cmake"
    printf 'set(PACKAGE_VERSION %s)\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n' "$version" > "$s/${name}ConfigVersion.cmake"
  done
  echo 'list(APPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}")' >> "$s/doctestConfig.cmake"
  printf '%s\n' '# Stand-in for doctest'"'"'s script: one CTest test per executable.' \
    'function(doctest_discover_tests target)' '  add_test(NAME ${target} COMMAND ${target})' 'endfunction()' \
    > "$s/doctest.cmake"
}

section_trainer_build() {
  local deps cudnn zinc="" zlib="" t0=$SECONDS
  if ! deps=$(cd "$DEPS_ARG" 2> /dev/null && pwd); then
    row "trainer build" "no dependency headers at $DEPS_ARG" "" FAILED
    return 1
  fi
  cudnn=$(trainer_find_cudnn)
  if [[ -z $cudnn ]]; then
    row "trainer build" "cuDNN 9 not found (CUDNN_ROOT, /usr/local/cuda, pip nvidia-cudnn-cu*)" "" FAILED
    return 1
  fi
  echo "cuDNN: $cudnn, version $(grep -hE '^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$cudnn"/include/cudnn_version.h 2> /dev/null |
    awk '{ printf "%s%s", sep, $3; sep = "." }')"
  for d in /usr/include "$deps/include"; do [[ -f $d/zlib.h ]] && { zinc=$d; break; }; done
  for f in /usr/lib/x86_64-linux-gnu/libz.so /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 \
           /usr/lib64/libz.so.1 /usr/lib/libz.so.1; do [[ -f $f ]] && { zlib=$f; break; }; done
  if [[ -z $zinc || -z $zlib ]]; then
    row "trainer build" "zlib not found (header '${zinc}', library '${zlib}'; copy zlib.h and zconf.h to DEPS/include)" "" FAILED
    return 1
  fi
  trainer_write_shim "$TRAINER_BUILD/shim" "$deps/include"
  local shim=$TRAINER_BUILD/shim
  local args=(-S "$ROOT" -B "$TRAINER_BUILD" -DCMAKE_BUILD_TYPE=Release -DNESTLA_BUILD_TESTS=OFF
              -DNESTLA_BUILD_EXAMPLES=ON -DNESTLA_CUDA=ON -DNESTLA_BUILD_CUDA_TESTS=OFF -DNESTLA_BUILD_CUDA_BENCHMARKS=OFF
              -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_PREFIX_PATH="$deps" -DCUDNN_ROOT="$cudnn"
              -Dnlohmann_json_DIR="$shim" -DCLI11_DIR="$shim" -DEigen3_DIR="$shim" -Ddoctest_DIR="$shim"
              -DZLIB_INCLUDE_DIR="$zinc" -DZLIB_LIBRARY="$zlib")
  # NCCL (distributed GPU runs under mpirun; a run of one process makes no NCCL call): as
  # device_check.sh's build found it, since find_library misses pip's libnccl.so.2.
  local nccl_inc=$NCCL_INC nccl_lib=$NCCL_LIB
  [[ -z $nccl_lib ]] && declare -F find_nccl > /dev/null && read -r nccl_inc nccl_lib <<< "$(find_nccl)"
  [[ -n $nccl_lib ]] && args+=(-DRESNET18_NCCL_INCLUDE_DIR="$nccl_inc" -DRESNET18_NCCL_LIBRARY="$nccl_lib")
  args+=("${CUDA_FLAG_ARGS[@]}")
  if ! cmake "${args[@]}" > "$LOGS/trainer_configure.log" 2>&1; then
    tail -30 "$LOGS/trainer_configure.log"
    row "trainer build: configure" "failed" "" FAILED
    return 1
  fi
  grep -E 'resnet18 (GPU )?trainer' "$LOGS/trainer_configure.log"
  if ! grep -q 'resnet18 GPU trainer: on' "$LOGS/trainer_configure.log"; then
    row "trainer build: configure" "$(grep 'resnet18 GPU trainer' "$LOGS/trainer_configure.log")" "" FAILED
    return 1
  fi
  if ! cmake --build "$TRAINER_BUILD" -j "$JOBS" --target "${TRAINER_TARGETS[@]}" > "$LOGS/trainer_build.log" 2>&1; then
    grep -E 'error|Error' "$LOGS/trainer_build.log" | head -30
    row "trainer build" "failed after $((SECONDS - t0)) s" "" FAILED
    return 1
  fi
  # pip's cuDNN loads its engine libraries from its own folder at run time.
  local libdir
  for libdir in "$cudnn"/lib "$cudnn"/lib64 "$cudnn"/lib/x86_64-linux-gnu; do
    [[ -d $libdir ]] && export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  "$TRAINER_BIN/resnet18_gpu_host_tests" > "$LOGS/trainer_host_tests.log" 2>&1
  local rc=$?
  local with_nccl="NCCL ${nccl_lib:+$(basename "$nccl_lib")}"
  grep -q 'resnet18 GPU trainer: no NCCL' "$LOGS/trainer_configure.log" && with_nccl="no NCCL"
  row "trainer build (${TRAINER_TARGETS[*]}) + host tests" \
      "$((SECONDS - t0)) s, $with_nccl; $(grep -E '^\[doctest\] test cases' "$LOGS/trainer_host_tests.log" | sed 's/\[doctest\] test cases: *//; s/ *| */, /g')" "" \
      "$( ((rc == 0)) && echo ok || echo FAILED)"
  ((rc == 0))
}

section_trainer_tests() {
  "$TRAINER_BIN/resnet18_gpu_tests" > "$LOGS/trainer_gpu_tests.log" 2>&1
  local rc=$?
  grep -E '^GRADCHECK|ERROR|FAILED|^\[doctest\] (test cases|assertions)|SKIPPED' "$LOGS/trainer_gpu_tests.log" | head -40
  local cases worst
  cases=$(grep -E '^\[doctest\] test cases' "$LOGS/trainer_gpu_tests.log" | sed 's/\[doctest\] test cases: *//; s/ *| */, /g')
  worst=$(sed -n 's/.*worst gradient rel err \([0-9.e+-]*\).*/\1/p' "$LOGS/trainer_gpu_tests.log" | sort -g | tail -1)
  row "ResNet-18 GPU vs CPU model: logits, every gradient, training steps, augmentation, checkpoints" \
      "${cases:-no summary (rc $rc)}; worst gradient rel err ${worst:-n/a}" "all pass; < 1e-4" \
      "$( ((rc == 0)) && echo ok || echo FAILED)"
  ((rc == 0))
}

section_trainer_bench() {
  local cfg name rc=0
  : > "$LOGS/trainer_bench.log"
  for cfg in "nhwc_tf32:--layout nhwc" "nhwc_tf32_bnp:--layout nhwc --bn-persistent" "nchw_tf32:--layout nchw"; do
    name=${cfg%%:*}
    # shellcheck disable=SC2086
    "$TRAINER_BIN/resnet18_gpu_bench" --batch "$TRAINER_BATCH" --label "trainer_$name" ${cfg#*:} \
      >> "$LOGS/trainer_bench.log" 2>&1 || rc=1
  done
  # Where the time goes (waits after every step, so not a throughput figure).
  "$TRAINER_BIN/resnet18_gpu_bench" --batch "$TRAINER_BATCH" --steps 10 --warmup 3 --label trainer_profile --profile \
    > "$LOGS/trainer_profile.log" 2>&1
  cat "$LOGS/trainer_bench.log" "$LOGS/trainer_profile.log"
  collect "$LOGS/trainer_bench.log"
  row "nestla trainer, batch $TRAINER_BATCH, float32 (TF32 convs): NHWC / NHWC persistent BN / NCHW" \
      "$(fmt "$(val trainer_nhwc_tf32_ips)" 0) / $(fmt "$(val trainer_nhwc_tf32_bnp_ips)" 0) / $(fmt "$(val trainer_nchw_tf32_ips)" 0) images/s" "" \
      "$( ((rc == 0)) && echo ok || echo FAILED)"
  return $rc
}

section_trainer_torch() {
  "${PY:-python3}" "$ROOT/benchmarks/gpu/torch_resnet_bench.py" --batch "$TRAINER_BATCH" > "$LOGS/torch_resnet.log" 2>&1
  local rc=$?
  cat "$LOGS/torch_resnet.log"
  ((rc == 0)) || { row "PyTorch ResNet-18" "not run (rc $rc): $(tail -1 "$LOGS/torch_resnet.log")" "" FAILED; return 1; }
  collect "$LOGS/torch_resnet.log"
  local ours theirs ratio pair label
  for pair in "nchw_tf32 fp32_nchw float32, NCHW" "nhwc_tf32 fp32_cl float32, channels last"; do
    read -r ours theirs label <<< "$pair"
    local a b
    a=$(val "trainer_${ours}_ips") b=$(val "torch_resnet18_${theirs}_ips")
    # Channels last: the faster of cuDNN's two batch-norm modes.
    [[ $ours == nhwc_tf32 ]] && cmp "$(val trainer_nhwc_tf32_bnp_ips)" '>' "${a:-0}" && a=$(val trainer_nhwc_tf32_bnp_ips)
    ratio=""
    [[ -n $a && -n $b ]] && ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')
    row "ResNet-18 training vs PyTorch, $label (TF32 convs), batch $TRAINER_BATCH" \
        "nestla $(fmt "$a" 0) / torch $(fmt "$b" 0) images/s = $(fmt "$ratio" 3)x" ">= 1" "$(verdict "$ratio" '>=' 1)"
  done
  row "ResNet-18 training vs PyTorch, autocast bf16, channels last" \
      "torch $(fmt "$(val torch_resnet18_bf16_cl_ips)" 0) images/s; nestla: bf16 not implemented" ">= 1" "NOT DONE"
}

section_trainer_run() {
  local data=${NESTLA_FASHION_MNIST:-$ROOT/third_party/fashion-mnist}
  if ! compgen -G "$data/train-images-idx3-ubyte*" > /dev/null; then
    row "resnet18_train --device cuda on Fashion-MNIST" "skipped: no files in $data" "" SKIPPED
    return 0
  fi
  "$TRAINER_BUILD/examples/resnet18/resnet18_train" --device cuda --dataset fashion-mnist --data "$data" \
    --optimizer nested --inner adam --lr 1e-3 --epochs 1 --batch-size 256 --progress none \
    --metrics "$TRAINER_BUILD/fmnist_metrics.jsonl" --checkpoint "$TRAINER_BUILD/fmnist.ckpt" \
    > "$LOGS/trainer_run.log" 2>&1
  local rc=$?
  cat "$LOGS/trainer_run.log"
  row "resnet18_train --device cuda, Fashion-MNIST, 1 epoch, Lookahead(Lookahead(Adam))" \
      "$(grep -E '^epoch' "$LOGS/trainer_run.log" | tail -1 | sed 's/  */ /g')" "test acc > 85%" \
      "$( ((rc == 0)) && echo ok || echo FAILED)"
  ((rc == 0))
}
# ======================== end of the ResNet-18 GPU trainer block ========================
