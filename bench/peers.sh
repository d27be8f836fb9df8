#!/usr/bin/env bash
# bench/peers.sh [-r ROUNDS] [-w WORKERS] [-n MESSAGES]: Relay, Postfix and Haraka measured the same way in the
# same sitting, interleaved, with ../shared/bench (smtp-source -> relay -> smtp-sink, 2000 x 5 KB, 20 sessions).
# -n 10000: a longer run per round, where Node's one-time JIT compilation (Relay, Haraka) weighs less.
# Needs the postfix and swaks Debian packages (see ../shared/bench/README.md). Prints RESULT lines.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${RELAY_SHARED_BENCH:-$here/../../shared/bench}
source "$shared/common.sh"
# -w N: also a Relay round with config workers: N in each round (label relay-wN).
rounds=3
workers=1
while getopts "r:w:n:" opt; do case $opt in r) rounds=$OPTARG ;; w) workers=$OPTARG ;; n) export BENCH_N=$OPTARG ;; *) exit 2 ;; esac; done

relay_round() {
  local cg data n=${1:-1} label=relay
  [ "$n" -gt 1 ] && label=relay-w$n
  cg=$(cg_new "$label")
  data=$(mktemp -d /tmp/peers/relay-data.XXXXXX)
  ( RELAY_BENCH_WORKERS=$n RELAY_BENCH_DATA=$data cg_exec "$cg" timeout 900 node "$here/../bin/relay.js" start --config "$here/relay-bench.config.ts" ) >/tmp/peers/relay.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do is_listening 127.0.0.1 2528 && break; sleep 0.1; done
  "$shared/relay-bench.sh" -L "$label" -G "$cg" 127.0.0.1:2528
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  grep -o '"eventLoopDelayMs":{[^}]*}' /tmp/peers/relay.log | sed 's/^/# relay /'
  rm -rf "$data"
}

mkdir -p /tmp/peers
for i in $(seq 1 "$rounds"); do
  echo "--- round $i  loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  relay_round 1 2>&1
  [ "$workers" -gt 1 ] && relay_round "$workers" 2>&1
  BENCH_LABEL=postfix "$shared/postfix.sh" 2>&1
  BENCH_LABEL=haraka "$shared/haraka.sh" 2>&1
done | tee /tmp/peers/peers-$(date +%F-%H%M).txt | grep -E '^(RESULT|---|# relay)'
