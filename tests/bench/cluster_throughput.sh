#!/usr/bin/env bash
# A three-broker cluster beside one broker, on loopback, in one run, with `surety perf produce`
# (kafka-producer-perf-test's flags) as the load generator:
#
#   1. one broker (`surety serve`), a topic of 3 partitions with replication factor 1, RECORDS
#      records (default 1,000,000) of 100 bytes, acks=1, as fast as possible;
#   2. `surety cluster up --brokers 3` (a controller and three brokers, each its own process), a
#      topic of 3 partitions with replication factor 3 and min.insync.replicas=2, the same records
#      with acks=all as fast as possible; then about HALF_RATE_SECONDS (default 10) seconds at
#      half the rate just measured, for the latency at a sustainable load.
#
# Prints a markdown table for docs/performance.md with PASS/FAIL against the targets: the
# cluster's acks=all throughput at least 0.5x the single broker's acks=1, and a p99 produce
# latency under 5 ms at half the cluster's maximum rate. Machines are noisy, so a missed target
# only fails the script with --strict.
#
# usage: [RECORDS=n] [HALF_RATE_SECONDS=s] [SURETY_BIN=path] tests/bench/cluster_throughput.sh [--strict]
#   SURETY_BIN: a broker binary to use as it is; without it, the release build is made first.
set -euo pipefail
cd "$(dirname "$0")/../.."

strict=false
for arg in "$@"; do
  case $arg in
    --strict) strict=true ;;
    *) echo "usage: $0 [--strict]" >&2; exit 2 ;;
  esac
done
records=${RECORDS:-1000000}
half_seconds=${HALF_RATE_SECONDS:-10}
size=100
min_ratio=0.5
max_p99_ms=5

if [ -n "${SURETY_BIN:-}" ]; then
  bin=$SURETY_BIN
else
  cargo build --release -q -p surety
  bin=target/release/surety
fi

work=$(mktemp -d)
broker_pid=
cluster_pid=
perf_pid=
stop() { # pid: SIGTERM, then up to 20 s for it to go (cluster up gives its nodes 10 s), then SIGKILL
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop "$perf_pid"
  stop "$broker_pid"
  stop "$cluster_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (at most 30 s) until every partition of a topic has a leader and `isr` in-sync replicas.
wait_for_topic() { # bootstrap, topic, partitions, isr
  local described
  for _ in $(seq 300); do
    described=$("$bin" topics --bootstrap-server "$1" describe "$2" 2>/dev/null || true)
    if [ "$(awk -v isr="$4" '/Partition: [0-9]/ {
          for (i = 1; i <= NF; i++) {
            if ($i == "Leader:") leader = $(i + 1)
            if ($i == "Isr:") n = split($(i + 1), ids, ",")
          }
          if (leader >= 0 && n >= isr) ready++
        } END { print ready + 0 }' <<< "$described")" -ge "$3" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "topic $2 not ready in 30 s:" >&2
  echo "$described" >&2
  return 1
}

# Runs `surety perf produce` (at most 300 s) and leaves its two summary lines, joined, in
# $work/perf-NAME. In the background, so that a signal to this script stops it at once.
perf() { # name, bootstrap, topic, records, rate, acks
  timeout 300 "$bin" perf produce --topic "$3" --num-records "$4" --record-size "$size" \
    --throughput "$5" --bootstrap-server "$2" --producer-props "acks=$6" > "$work/perf-$1.out" &
  perf_pid=$!
  wait "$perf_pid"
  perf_pid=
  tr '\n' ' ' < "$work/perf-$1.out" > "$work/perf-$1"
}
rate_of() { sed -n 's/.*sent, \([0-9.]*\) records\/sec.*/\1/p' <<< "$1"; }
percentile() { sed -n "s/.* \([0-9.]*\) ms $2th.*/\1/p" <<< "$1"; }

# 1. One broker, replication factor 1, acks=1.
"$bin" serve --override "log.dirs=$work/single" --override listeners=PLAINTEXT://127.0.0.1:0 \
  2> "$work/single.log" &
broker_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/single.log" && break; sleep 0.1; done
single=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/single.log")
[ -n "$single" ] || { echo "the broker did not start:" >&2; tail "$work/single.log" >&2; exit 1; }
"$bin" topics --bootstrap-server "$single" create bench-rf1 --partitions 3 \
  --replication-factor 1 >/dev/null
wait_for_topic "$single" bench-rf1 3 1
perf single "$single" bench-rf1 "$records" -1 1
single_run=$(cat "$work/perf-single")
echo "single broker, RF 1, acks=1, flat out: $single_run" >&2
stop "$broker_pid"; broker_pid=

# 2. Three brokers (and a controller), replication factor 3, min.insync.replicas=2, acks=all.
"$bin" cluster up --brokers 3 --data-dir "$work/cluster" > "$work/cluster.out" \
  2> "$work/cluster.log" &
cluster_pid=$!
bootstrap=
for _ in $(seq 900); do # cluster up waits up to 60 s for its brokers to register
  bootstrap=$(sed -n 's/^bootstrap\.servers=//p' "$work/cluster.out")
  [ -n "$bootstrap" ] && break
  kill -0 "$cluster_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$bootstrap" ] || { echo "the cluster did not start:" >&2; tail -20 "$work/cluster.log" >&2; exit 1; }
"$bin" topics --bootstrap-server "$bootstrap" create bench-rf3 --partitions 3 \
  --replication-factor 3 --config min.insync.replicas=2 >/dev/null
wait_for_topic "$bootstrap" bench-rf3 3 3
perf cluster "$bootstrap" bench-rf3 "$records" -1 all
cluster_run=$(cat "$work/perf-cluster")
echo "three brokers, RF 3, acks=all, flat out: $cluster_run" >&2

single_rate=$(rate_of "$single_run")
cluster_rate=$(rate_of "$cluster_run")
half=$(awk -v r="$cluster_rate" 'BEGIN { printf "%d", r / 2 }')
perf half "$bootstrap" bench-rf3 $((half * half_seconds)) "$half" all
half_run=$(cat "$work/perf-half")
echo "three brokers, RF 3, acks=all, $half records/s: $half_run" >&2
stop "$cluster_pid"; cluster_pid=

# 3. The table.
p50=$(percentile "$half_run" 50)
p99=$(percentile "$half_run" 99)
half_achieved=$(rate_of "$half_run")
read -r ratio ratio_verdict p99_verdict < <(awk -v s="$single_rate" -v c="$cluster_rate" \
  -v p="$p99" -v rmin="$min_ratio" -v pmax="$max_p99_ms" 'BEGIN {
    r = c / s
    printf "%.2f %s %s\n", r, (r >= rmin ? "PASS" : "FAIL"), (p < pmax ? "PASS" : "FAIL")
  }')
fmt() { python3 -c 'import sys; print(f"{round(float(sys.argv[1])):,}")' "$1"; }
echo "| run | figure | target | verdict |"
echo "|---|---|---|---|"
echo "| 1 broker, RF 1, acks=1, flat out | $(fmt "$single_rate") records/s | | |"
echo "| 3 brokers, RF 3, acks=all, flat out | $(fmt "$cluster_rate") records/s | | |"
echo "| ratio, 3 brokers acks=all / 1 broker acks=1 | ${ratio}× | ≥ ${min_ratio}× | $ratio_verdict |"
echo "| 3 brokers, acks=all, at half that rate ($(fmt "$half") records/s asked, $(fmt "$half_achieved") sent) | p50 $p50 ms, p99 $p99 ms | p99 < $max_p99_ms ms | $p99_verdict |"
echo
echo "Records: $records of $size bytes (half-rate run: $((half * half_seconds))), 3 partitions;" \
  "min.insync.replicas=2 on the cluster's topic; $(nproc) cores, every process on this machine."

if $strict && { [ "$ratio_verdict" = FAIL ] || [ "$p99_verdict" = FAIL ]; }; then
  exit 1
fi
