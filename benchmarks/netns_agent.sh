#!/bin/sh
# Open MPI's remote-start agent for benchmarks/distributed_netns.sh: "netns_agent.sh HOST COMMAND..." runs COMMAND in network namespace HOST, in place of ssh.
host=$1
shift
exec ip netns exec "$host" /bin/sh -c "$*"
