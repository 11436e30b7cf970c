#!/usr/bin/env bash
# Produce and consume throughput of the release broker over loopback, with kcat as the client:
# N records (default 2,000,000) of 100 bytes to one partition, acks=1 and acks=all, each
# produced and then consumed back from the beginning. Prints records/s, MB/s and the broker's
# CPU seconds per million records, beside the machine's loopback and disk limits measured in
# the same run, as a markdown table for docs/performance.md.
#
# With a second argument, a baseline broker binary (say, the previous commit's, built in a second
# work tree), the same runs are made against it first and its rows are labelled "baseline": a
# before-and-after comparison from one run on one machine.
#
# usage: tests/bench/throughput.sh [records] [baseline-binary]
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-2000000}
baseline=${2:-}
size=100

cargo build --release -q -p surety
bin=target/release/surety
work=$(mktemp -d)
broker_pid=
trap 'kill $broker_pid 2>/dev/null || true; rm -rf "$work"' EXIT

# Input: one record per line; kcat strips the newline, so each record's value is 100 bytes.
python3 - "$records" "$size" > "$work/records.txt" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
line = ("x" * size + "\n").encode()
out = sys.stdout.buffer
chunk = line * 10000
for _ in range(n // 10000):
    out.write(chunk)
out.write(line * (n % 10000))
PY

now() { date +%s.%N; }
cpu_seconds() { # utime + stime of a process, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# Machine limits, measured now: loopback TCP and fsynced sequential disk writes.
loopback=$(python3 - <<'PY'
import socket, threading, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def sink():
    c, _ = srv.accept(); buf = bytearray(1 << 20)
    while c.recv_into(buf): pass
threading.Thread(target=sink, daemon=True).start()
s = socket.create_connection(("127.0.0.1", port)); data = b"x" * (1 << 20)
total, start = 0, time.time()
while time.time() - start < 2:
    s.sendall(data); total += len(data)
print("%.0f" % (total / (time.time() - start) / 1e6))
PY
)
disk=$(dd if=/dev/zero of="$work/dd.test" bs=1M count=512 conv=fdatasync 2>&1 | awk '/copied/ { print $(NF-1), $NF }')
rm -f "$work/dd.test"

measure() { # binary, tag (baseline or this)
  local bin=$1 tag=$2 data="$work/data-$2" label=""
  [ "$tag" = baseline ] && label="baseline: "
  "$bin" serve --override "log.dirs=$data" --override listeners=PLAINTEXT://127.0.0.1:0 \
    2> "$work/broker-$tag.log" &
  broker_pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/broker-$tag.log" && break; sleep 0.1; done
  local address
  address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/broker-$tag.log")
  for acks in 1 all; do
    topic="bench-acks-$acks"
    "$bin" topics --bootstrap-server "$address" create "$topic" --partitions 1 >/dev/null
    cpu0=$(cpu_seconds $broker_pid); t0=$(now)
    kcat -b "$address" -P -t "$topic" -p 0 -X acks=$acks -X linger.ms=5 \
      -X batch.num.messages=10000 -X queue.buffering.max.messages=2000000 \
      -X queue.buffering.max.kbytes=1048576 < "$work/records.txt"
    t1=$(now); cpu1=$(cpu_seconds $broker_pid)
    kcat -b "$address" -C -t "$topic" -p 0 -o beginning -e -c "$records" -q \
      -X fetch.message.max.bytes=4194304 -f '' > /dev/null
    t2=$(now); cpu2=$(cpu_seconds $broker_pid)
    awk -v n="$records" -v s="$size" -v a="$acks" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
        -v c0="$cpu0" -v c1="$cpu1" -v c2="$cpu2" -v l="$label" 'BEGIN {
      p = t1 - t0; c = t2 - t1
      printf "| %sproduce, acks=%s | %.0f | %.1f | %.3f |\n", l, a, n / p, n * s / p / 1e6, (c1 - c0) / (n / 1e6)
      printf "| %sconsume (after acks=%s) | %.0f | %.1f | %.3f |\n", l, a, n / c, n * s / c / 1e6, (c2 - c1) / (n / 1e6)
    }'
  done
  # The broker alone serving stored bytes: a raw fetch loop that decodes nothing.
  cpu0=$(cpu_seconds $broker_pid)
  read -r responses bytes < <(python3 tests/bench/fetch_loop.py "$address" bench-acks-1 5 8388608)
  cpu1=$(cpu_seconds $broker_pid)
  awk -v r="$responses" -v b="$bytes" -v c0="$cpu0" -v c1="$cpu1" -v l="$label" 'BEGIN {
    printf "| %sfetch loop, 8 MiB responses, 5 s | %.0f responses/s | %.1f | %.3f CPU s per GB |\n", l, r / 5, b / 5 / 1e6, (c1 - c0) / (b / 1e9)
  }' >> "$work/fetch-rows"
  kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true
  rm -rf "$data"
}

# ROUNDS (default 1) repeats the runs, alternating baseline and this build, and then adds a row of
# medians per run: phases on a small virtual machine vary by a third from one to the next, even
# for one binary, so a single before/after pair says little.
rounds=${ROUNDS:-1}
{
  for _ in $(seq "$rounds"); do
    if [ -n "$baseline" ]; then
      measure "$baseline" baseline
    fi
    measure "$bin" this
  done
  cat "$work/fetch-rows"
} > "$work/rows"
echo "| run | records/s | MB/s | broker CPU per unit |"
echo "|---|---|---|---|"
python3 - "$work/rows" "$rounds" <<'PY'
import statistics, sys
rows = [r.strip() for r in open(sys.argv[1]) if r.startswith("|")]
if int(sys.argv[2]) == 1:
    print("\n".join(rows))
    raise SystemExit
order, cells = [], {}
for r in rows:
    parts = [p.strip() for p in r.strip("|").split("|")]
    if parts[0] not in cells:
        order.append(parts[0])
        cells[parts[0]] = []
    cells[parts[0]].append(parts[1:])
def median(values):
    nums = [float(v.split()[0]) for v in values]
    unit = " ".join(values[0].split()[1:])
    m = statistics.median(nums)
    text = f"{m:.0f}" if m >= 100 else f"{m:.3f}"
    return (text + " " + unit).strip()
for label in order:
    runs = cells[label]
    columns = [median([run[i] for run in runs]) for i in range(len(runs[0]))]
    print(f"| {label} (median of {len(runs)}) | " + " | ".join(columns) + " |")
PY
echo
echo "Machine, same run: loopback TCP ${loopback} MB/s (one stream); disk ${disk} (512 MiB, dd with fdatasync)."
echo "Records: $records of $size bytes, one partition; broker: surety serve, defaults; client: $(kcat -V 2>&1 | grep -o '^Version [^ ]*' | sed 's/Version/kcat/'), $(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*')."
