#!/usr/bin/env bash
# A long fuzzing campaign: builds the fuzz targets with clang-14, libFuzzer, ASan and UBSan, runs them one after the other at low priority, and prints executions, coverage and findings.
#
#   fuzz/campaign.sh [-t SECONDS] [TARGET[=SECONDS]]...
#
# Targets: fuzz_checkpoint fuzz_cifar10 fuzz_idx (default: all three, SECONDS each; default 600).
# Environment: NESTLA_FUZZ_BUILD (build directory, default build-fuzz), NESTLA_FUZZ_OUT (corpus,
# logs and findings, default $NESTLA_FUZZ_BUILD/campaign; the corpus grows from one campaign to the next).
# Exit status 1 when a target reported a finding (its input is in $NESTLA_FUZZ_OUT/findings/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${NESTLA_FUZZ_BUILD:-$root/build-fuzz}"
out="${NESTLA_FUZZ_OUT:-$build/campaign}"
seconds=600
if [ "${1:-}" = "-t" ]; then
  seconds="$2"
  shift 2
fi
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(fuzz_checkpoint fuzz_cifar10 fuzz_idx)

commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DNESTLA_BUILD_TESTS=OFF -DNESTLA_BUILD_EXAMPLES=OFF -DNESTLA_CUDA=OFF -DNESTLA_SANITIZE="address;undefined" >/dev/null
grep -q "NESTLA_HAVE_LIBFUZZER:INTERNAL=1" "$build/CMakeCache.txt" ||
  { echo "campaign: libFuzzer not available (Debian: clang-14 libclang-rt-14-dev)" >&2; exit 2; }
cmake --build "$build" -j2 --target fuzz_checkpoint fuzz_cifar10 fuzz_idx nestla_fuzz_seeds >/dev/null
"$build/fuzz/nestla_fuzz_seeds" --keep-corpus "$out"
mkdir -p "$out/findings"

status=0
summary=()
for spec in "${specs[@]}"; do
  t="${spec%%=*}"
  s="$seconds"
  [ "$spec" != "$t" ] && s="${spec#*=}"
  read -r -a args <"$build/fuzz/$t.args"
  log="$out/$t.log"
  echo "campaign: $t for $s s (log: $log)"
  start=$(date +%s)
  rc=0
  nice -n 10 "$build/fuzz/$t" -max_total_time="$s" -timeout=10 -print_final_stats=1 "${args[@]}" \
    -artifact_prefix="$out/findings/$t-" "$out/corpus/$t" "$out/seeds/$t" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' "$log" | tail -1)
  findings=$(ls "$out/findings" | grep -c "^$t-" || true)
  [ "$rc" -eq 0 ] || status=1
  summary+=("$t: ${took} s, ${execs:-?} executions, ${cov:-no coverage line}, exit $rc, $findings finding files")
done
echo "campaign summary (finished $(date -u +%Y-%m-%dT%H:%MZ), built from $commit):"
printf '  %s\n' "${summary[@]}"
exit $status
