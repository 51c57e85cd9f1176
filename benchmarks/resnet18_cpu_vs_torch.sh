#!/usr/bin/env bash
# ResNet-18 (CIFAR stem, full width, 32x32x3) CPU training throughput: nestla's resnet18_bench vs PyTorch.
#
# usage: benchmarks/resnet18_cpu_vs_torch.sh [BUILD_DIR]        (default BUILD_DIR: build-bench-cpu)
# env:   ROUNDS=3 STEPS=4 WARMUP=2 THREADS=2 BATCHES=64,128 BACKEND=onednn NATIVE=0 PYTHON=/usr/bin/python3
#
# Configures BUILD_DIR if needed (NATIVE=1 adds -DNESTLA_NATIVE=ON) and (re)builds resnet18_bench, then runs ours and
# PyTorch (benchmarks/torch_resnet18_cpu.py: NCHW and channels_last, Adam step included) alternately,
# A B A B, ROUNDS times, and prints a markdown table of the per-config median over rounds.
# Both run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (see shared/design/perf-notes.md).
# Defaults take about 3-4 minutes on an idle 2-core machine; run it on an idle machine only.
#
# Both sides time a whole training step: forward, backward and an Adam step (nestla's fused Adam over
# the model's own storage; torch.optim.Adam).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build-bench-cpu}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
ROUNDS=${ROUNDS:-3} STEPS=${STEPS:-4} WARMUP=${WARMUP:-2} THREADS=${THREADS:-2}
BATCHES=${BATCHES:-64,128} BACKEND=${BACKEND:-onednn} NATIVE=${NATIVE:-0} PYTHON=${PYTHON:-/usr/bin/python3}
PEAK_GFLOPS=${PEAK_GFLOPS:-$((222 * THREADS))}   # FMA peak: 222 GFLOP/s per thread (shared/design/perf-notes.md)
BIN=$BUILD/examples/resnet18/resnet18_bench

if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  native=OFF; [[ $NATIVE == 1 ]] && native=ON
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNESTLA_BUILD_TESTS=OFF -DNESTLA_NATIVE=$native >&2
fi
cmake --build "$BUILD" --target resnet18_bench -j "$(nproc)" >&2   # incremental: a stale binary lacks --backend

export GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=$THREADS
LOG=$(mktemp); trap 'rm -f "$LOG"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
  echo "round $r/$ROUNDS: ours" >&2
  "$BIN" --threads "$THREADS" --batch "$BATCHES" --steps "$STEPS" --warmup "$WARMUP" --backend "$BACKEND" |
    sed -n 's/^batch \([0-9]*\): .*with the Adam step ([0-9.]* ms) \([0-9.]*\) images\/s.*/RESULT ours x batch \1 \2/p' >>"$LOG"
  echo "round $r/$ROUNDS: torch" >&2
  "$PYTHON" "$ROOT/benchmarks/torch_resnet18_cpu.py" --threads "$THREADS" --batch "$BATCHES" --steps "$STEPS" \
    --warmup "$WARMUP" | grep '^RESULT' >>"$LOG"
done

"$PYTHON" - "$LOG" "$THREADS" "$PEAK_GFLOPS" "$ROUNDS" "$BACKEND" <<'PY'
import statistics, sys
log, threads, peak, rounds, backend = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
r = {}
for line in open(log):
    _, who, fmt, _, batch, ips = line.split()[:6]
    r.setdefault((who, fmt, int(batch)), []).append(float(ips))
med = {k: statistics.median(v) for k, v in r.items()}
print(f"\nResNet-18 CIFAR stem, 32x32x3, {threads} threads, median of {rounds} rounds (images/s; ours = {backend},"
      " forward + backward + Adam step on both sides)\n")
print("| config | ours img/s | torch NCHW img/s | torch channels-last img/s | ours / torch-CL | ours % of FMA peak |")
print("|---|---|---|---|---|---|")
for b in sorted({k[2] for k in med}):
    ours, nchw, cl = med.get(("ours", "x", b)), med.get(("torch", "nchw", b)), med.get(("torch", "cl", b))
    f = lambda v: "-" if v is None else f"{v:.1f}"
    ratio = "-" if not (ours and cl) else f"{ours / cl:.2f}"
    frac = "-" if ours is None else f"{100 * ours * 3 * 1.111 / peak:.0f}%"
    print(f"| batch {b}, {threads} thr | {f(ours)} | {f(nchw)} | {f(cl)} | {ratio} | {frac} |")
print(f"\nFMA peak {peak:g} GFLOP/s; training cost taken as 3 x 1.111 GFLOP/image.")
PY
