#!/usr/bin/env bash
# Accuracy of distributed training: ResNet-18 (small width) on Fashion-MNIST, 4 workers, the same epochs and global batch,
# single process vs DDP-style gradient averaging vs Lookahead over all vs nested (pairs, then all) vs DiLoCo,
# and Lookahead and nested Lookahead with alpha = 1 (periodic averaging) beside them. Runs already finished in OUT_DIR are kept.
#
#   benchmarks/distributed_accuracy.sh [BUILD_DIR] [OUT_DIR]    (defaults build-ex, build-ex/distributed_accuracy)
#
# Needs resnet18_train built with MPI (cmake --build BUILD_DIR --target resnet18_train). Writes each run's
# metrics and log to OUT_DIR, then OUT_DIR/summary.md (final accuracy and bytes sent per worker beside each
# row) and, through examples/resnet18/experiments.py --report, OUT_DIR/report.md and report.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build-ex}
out=${2:-$build/distributed_accuracy}
train=$build/examples/resnet18/resnet18_train
width=${WIDTH:-8}
epochs=${EPOCHS:-3}
batch=${BATCH:-128}
workers=${WORKERS:-4}
# Debian's python3-matplotlib is in /usr/bin's Python, not in a pyenv or venv first on PATH.
py=${PYTHON:-/usr/bin/python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
common=(--width "$width" --epochs "$epochs" --batch-size "$batch" --threads 1 --progress plain --seed 0)
mpi=(mpirun -np "$workers" --oversubscribe)
runs=(
  "single|Adam, one process|"
  "ddp|DDP-style: Adam, gradients averaged over all|${mpi[*]}|--optimizer adam --groups all"
  "lookahead|Lookahead(5, 0.5) + Adam over all|${mpi[*]}|--optimizer lookahead --k 5 --alpha 0.5 --groups 1,all"
  "nested|Nested Lookahead(5, 0.5; 5, 0.5) + Adam: pairs, then all|${mpi[*]}|--optimizer nested --k 5 --alpha 0.5 --s 5 --h 0.5 --groups 1,2,all"
  "periodic|Lookahead(5, 1) + Adam over all: periodic averaging (how much of Lookahead's gap alpha = 0.5 makes)|${mpi[*]}|--optimizer lookahead --k 5 --alpha 1 --groups 1,all"
  "nested-periodic|Nested Lookahead(5, 1; 5, 1) + Adam: pairs, then all: hierarchical periodic averaging|${mpi[*]}|--optimizer nested --k 5 --alpha 1 --s 5 --h 1 --groups 1,2,all"
  "diloco|DiLoCo: AdamW, outer Nesterov (lr 0.7, momentum 0.9) every 5 steps over all|${mpi[*]}|--optimizer lookahead --inner adamw --k 5 --alpha 0.7 --outer-momentum 0.9 --outer-nesterov --groups 1,all"
)
for r in "${runs[@]}"; do
  IFS='|' read -r name label launcher args <<<"$r"
  [ "$name" = single ] && args="--optimizer adam"
  if [ -s "$out/$name.jsonl" ] && grep -q '"summary"' "$out/$name.jsonl"; then
    echo "== $name: done already ($out/$name.jsonl)" >&2
    continue
  fi
  echo "== $name: $label" >&2
  # shellcheck disable=SC2086
  $launcher "$train" "${common[@]}" $args --metrics "$out/$name.jsonl" >"$out/$name.log" 2>&1
done

"$py" - "$out" "$workers" <<'PY'
import json, sys
from pathlib import Path
out, workers = Path(sys.argv[1]), int(sys.argv[2])
labels = {"single": "one process, Adam", "ddp": "DDP-style (gradients averaged every step)",
          "lookahead": "Lookahead(5, 0.5) over all", "periodic": "Lookahead(5, 1) over all: periodic averaging",
          "nested-periodic": "Nested Lookahead(5, 1; 5, 1): pairs, then all (periodic averaging)",
          "nested": "Nested Lookahead(5, 0.5; 5, 0.5): pairs, then all",
          "diloco": "DiLoCo: AdamW, outer Nesterov 0.7/0.9, every 5 steps"}
rows = ["| run | workers | final test acc | best (epoch) | steps | bytes sent per worker | per step | time |",
        "|---|---|---|---|---|---|---|---|"]
for name, label in labels.items():
    path = out / f"{name}.jsonl"
    recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    epochs = [r for r in recs if "epoch" in r and "test_acc" in r]
    summary = next(r["summary"] for r in recs if "summary" in r)
    sent = epochs[-1].get("bytes_sent", 0.0) if epochs else 0.0
    steps = summary["steps"]
    rows.append(f"| {label} | {1 if name == 'single' else workers} | {100 * summary['final_test_acc']:.2f}% | "
                f"{100 * summary['best_test_acc']:.2f}% ({summary['best_epoch']}) | {steps} | {sent / 1e6:.1f} MB | "
                f"{sent / steps / 1e6:.3f} MB | {summary['seconds'] / 60:.1f} min |")
text = "\n".join(rows) + "\n"
(out / "summary.md").write_text(text)
print(text)
PY
"$py" "$root/examples/resnet18/experiments.py" --out "$out" --title "ResNet-18 on Fashion-MNIST, $workers workers" \
  --report "$out"/single.jsonl "$out"/ddp.jsonl "$out"/lookahead.jsonl "$out"/nested.jsonl "$out"/periodic.jsonl "$out"/nested-periodic.jsonl "$out"/diloco.jsonl >/dev/null
echo "distributed_accuracy: $out/summary.md, $out/report.md, $out/report.png" >&2
