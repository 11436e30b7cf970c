#!/usr/bin/env bash
# Surety's producer beside librdkafka's against the same release broker, in one run:
# throughput flat out at equal batch.size (kcat for librdkafka, whose default is 1000000;
# `surety perf produce` for ours, whose default is Kafka's 16384), then latency at
# fixed rates (confluent-kafka for librdkafka, measured as `surety perf produce` measures:
# send to acknowledgement). One partition, 100-byte records, acks=1, no idempotence.
# Prints lines for docs/performance.md.
#
# usage: tests/bench/producer_vs_librdkafka.sh [records]   (needs kcat and target/e2e-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-2000000}
python=${SURETY_PYTHON:-target/e2e-venv/bin/python}

cargo build --release -q -p surety
bin=target/release/surety
work=$(mktemp -d)
trap 'kill $broker_pid 2>/dev/null || true; rm -rf "$work"' EXIT

python3 -c "import sys; sys.stdout.buffer.write((b'x' * 100 + b'\n') * $records)" > "$work/records.txt"
"$bin" serve --override "log.dirs=$work/data" --override listeners=PLAINTEXT://127.0.0.1:0 \
  2> "$work/broker.log" &
broker_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/broker.log" && break; sleep 0.1; done
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/broker.log")
for topic in kcat ours lat-librdkafka lat-ours; do
  "$bin" topics create "$topic" --partitions 1 --bootstrap-server "$address" >/dev/null
done
common=(acks=1 enable.idempotence=false)

echo "## throughput, $records records, each batch.size for both clients"
for batch in 16384 262144 1000000; do
  start=$(date +%s.%N)
  kcat -b "$address" -P -t kcat -X acks=1 -X enable.idempotence=false -X "batch.size=$batch" \
    -l "$work/records.txt"
  end=$(date +%s.%N)
  echo "kcat batch.size=$batch: $(python3 -c "print(round($records / ($end - $start)))") records/s"
  echo "ours batch.size=$batch: $("$bin" perf produce --topic ours --num-records "$records" \
    --record-size 100 --producer-props "bootstrap.servers=$address" "${common[@]}" \
    batch.size=$batch | tr '\n' ' ')"
done

for rate in 20000 100000; do
  n=$((rate * 5))
  echo "## latency at $rate records/s, linger.ms=5"
  echo "librdkafka: $("$python" tests/bench/librdkafka_latency.py "$address" lat-librdkafka \
    "$n" 100 "$rate" "${common[@]}" | tr '\n' ' ')"
  echo "ours: $("$bin" perf produce --topic lat-ours --num-records "$n" --record-size 100 \
    --throughput "$rate" --producer-props "bootstrap.servers=$address" "${common[@]}" \
    | tr '\n' ' ')"
done
