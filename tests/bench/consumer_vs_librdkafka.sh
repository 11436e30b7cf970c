#!/usr/bin/env bash
# Surety's group consumer beside librdkafka's against the same release broker, in one run:
# N records of 100 bytes on 3 partitions, each client a new member of a fresh group (so it
# joins, is assigned every partition and reads from the start), group.initial.rebalance.delay.ms=0.
# librdkafka through `kcat -G` (printing nothing per record) and through confluent-kafka;
# ours through `surety perf consume`, which also prints the time from subscribing to the
# assignment. Prints lines for docs/performance.md.
#
# usage: tests/bench/consumer_vs_librdkafka.sh [records]   (needs kcat and target/e2e-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-2000000}
python=${SURETY_PYTHON:-target/e2e-venv/bin/python}

cargo build --release -q -p surety
bin=target/release/surety
work=$(mktemp -d)
trap 'kill $broker_pid 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" serve --override "log.dirs=$work/data" --override listeners=PLAINTEXT://127.0.0.1:0 \
  --override group.initial.rebalance.delay.ms=0 2> "$work/broker.log" &
broker_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/broker.log" && break; sleep 0.1; done
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/broker.log")
"$bin" topics create records --partitions 3 --bootstrap-server "$address" >/dev/null
"$bin" perf produce --topic records --num-records "$records" --record-size 100 \
  --producer-props "bootstrap.servers=$address" acks=1 batch.size=65536 >/dev/null
# A first group creates __consumer_offsets (50 partitions), which no run below should time.
"$bin" perf consume --topic records --messages 1 --bootstrap-server "$address" >/dev/null

echo "## $records records of 100 bytes, 3 partitions, a fresh group per run"
for run in 1 2; do
  start=$(date +%s.%N)
  kcat -b "$address" -G "kcat-$run" -X auto.offset.reset=earliest -e -q -f '' records
  end=$(date +%s.%N)
  echo "kcat -G, run $run: $(python3 -c "print(round($records / ($end - $start)))") records/s"
  echo "confluent-kafka, run $run: $("$python" tests/bench/librdkafka_group_consume.py \
    "$address" records "confluent-$run" "$records")"
  echo "ours, run $run: $("$bin" perf consume --topic records --messages "$records" \
    --bootstrap-server "$address" --group "ours-$run")"
done
