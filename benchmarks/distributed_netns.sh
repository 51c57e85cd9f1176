#!/usr/bin/env bash
# Distributed steps on 4 processes: shared memory, TCP over loopback, and two network namespaces joined by a throttled veth pair (2 + 2 processes).
#
#   benchmarks/distributed_netns.sh [BUILD_DIR]     (root: it creates namespaces; default BUILD_DIR build-bench)
#
# Needs distributed_bench built (cmake -DNESTLA_BUILD_BENCHMARKS=ON ...; cmake --build BUILD_DIR --target distributed_bench).
# The slow link: namespaces nestla-a (ranks 0, 1; runs mpirun) and nestla-b (ranks 2, 3), veth
# 10.99.0.1 <-> 10.99.0.2, each end limited by tc to RATE (default 1gbit) and, when the kernel has
# sch_netem, delayed by DELAY (default 1ms). Open MPI starts the remote daemon through
# netns_agent.sh (ip netns exec in place of ssh). Only TCP is allowed (btl tcp,self), so the
# two namespaces talk over the veth; the bytes it carried are read from its counters, and
# what one TCP stream gets through it without MPI is measured first (tcp_throughput.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build-bench}
bench=$build/benchmarks/distributed_bench
steps=${STEPS:-50}
warmup=${WARMUP:-25}
rate=${RATE:-1gbit}
delay=${DELAY:-1ms}
layouts=${LAYOUTS:-local ddp lookahead nested}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -x "$bench" ] || { echo "no $bench: build the distributed_bench target first" >&2; exit 1; }

run() {  # run LABEL MPIRUN-ARGS...: one table row per layout
  local label=$1; shift
  echo "== $label" >&2
  for l in $layouts; do
    "$@" "$bench" --steps "$steps" --warmup "$warmup" --layouts "$l" | tail -1
  done
}

echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; $(date -u +%F)"
echo "4 workers, Adam float32 on the ResNet-18 parameter set (11.17M), k = s = 5, $steps timed steps after $warmup"
echo
echo "| layout | ms/step | collectives/step | payload MB/step | sent MB/step | of which inner (pairs) | outer (all) |"
echo "|---|---|---|---|---|---|---|"
run "shared memory" mpirun -np 4 --oversubscribe | sed 's/^| \([a-z]*\) /| \1, shared memory /'
run "TCP loopback" mpirun -np 4 --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo |
  sed 's/^| \([a-z]*\) /| \1, TCP loopback /'

# The two namespaces.
cleanup() {
  ip netns del nestla-a 2>/dev/null || true
  ip netns del nestla-b 2>/dev/null || true
}
tmp=$(mktemp -d)
trap 'cleanup; rm -rf "$tmp"' EXIT
cleanup
ip netns add nestla-a
ip netns add nestla-b
ip link add nestla-va type veth peer name nestla-vb
ip link set nestla-va netns nestla-a
ip link set nestla-vb netns nestla-b
ip netns exec nestla-a ip addr add 10.99.0.1/24 dev nestla-va
ip netns exec nestla-b ip addr add 10.99.0.2/24 dev nestla-vb
for s in a b; do
  ip netns exec nestla-$s ip link set lo up
  ip netns exec nestla-$s ip link set nestla-v$s up
done
shaping="tbf rate $rate (no netem in this kernel: no added delay)"
for s in a b; do
  if ip netns exec nestla-$s tc qdisc add dev nestla-v$s root netem rate "$rate" delay "$delay" limit 100000 2>/dev/null; then
    shaping="netem rate $rate delay $delay"
  else
    ip netns exec nestla-$s tc qdisc add dev nestla-v$s root tbf rate "$rate" burst 256kb latency 20ms
  fi
done
# What the link carries without MPI: one TCP stream a -> b, then one each way at once.
probe=$here/tcp_throughput.py
mbs=${PROBE_MB:-200}
ip netns exec nestla-b python3 "$probe" serve 10.99.0.2 5301 >"$tmp/ab" &
ip netns exec nestla-a python3 "$probe" send 10.99.0.2 5301 "$mbs"
wait
ip netns exec nestla-b python3 "$probe" serve 10.99.0.2 5302 >"$tmp/ab2" &
ip netns exec nestla-a python3 "$probe" serve 10.99.0.1 5303 >"$tmp/ba2" &
ip netns exec nestla-a python3 "$probe" send 10.99.0.2 5302 "$mbs" &
ip netns exec nestla-b python3 "$probe" send 10.99.0.1 5303 "$mbs"
wait
echo
echo "Two namespaces (ranks 0, 1 | ranks 2, 3), veth shaped by $shaping, TCP only."
echo "One TCP stream without MPI ($mbs MB): $(cat "$tmp/ab") MB/s a to b; one each way at once: $(cat "$tmp/ab2") and $(cat "$tmp/ba2") MB/s."
echo
echo "| layout | ms/step | collectives/step | payload MB/step | sent MB/step | of which inner (pairs) | outer (all) | veth MB/step (both ways) |"
echo "|---|---|---|---|---|---|---|---|"
counter() { ip netns exec nestla-a cat /sys/class/net/nestla-va/statistics/"$1"; }
for l in $layouts; do
  tx0=$(counter tx_bytes) rx0=$(counter rx_bytes)
  row=$(ip netns exec nestla-a mpirun -np 4 --host "$(hostname)":2,nestla-b:2 --mca plm_rsh_agent "$here/netns_agent.sh" \
    --mca btl tcp,self --mca btl_tcp_if_include 10.99.0.0/24 --mca oob_tcp_if_include 10.99.0.0/24 \
    "$bench" --steps "$steps" --warmup "$warmup" --layouts "$l" | tail -1)
  tx1=$(counter tx_bytes) rx1=$(counter rx_bytes)
  # Over warm-up and timed steps (the first step's broadcast included).
  per=$(python3 -c "print(f'{(($tx1 - $tx0) + ($rx1 - $rx0)) / 1e6 / ($steps + $warmup):.2f}')")
  echo "$row $per |"
done
echo
for s in a b; do
  echo "tc on nestla-v$s: $(ip netns exec nestla-$s tc -s qdisc show dev nestla-v$s | grep -o 'Sent [0-9]* bytes [0-9]* pkt (dropped [0-9]*, overlimits [0-9]*')"
done
