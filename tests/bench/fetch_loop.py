"""Fetches the same partition from offset 0 again and again over one connection, one request in
flight, and reports MB/s: the broker's cost of serving stored bytes, with no client decoding them
(kcat decodes every record and is the bottleneck in the consume rows of throughput.sh).

usage: fetch_loop.py host:port topic seconds max_bytes
prints: <responses> <bytes>
"""
import socket
import struct
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
topic = sys.argv[2].encode()
seconds = float(sys.argv[3])
max_bytes = int(sys.argv[4])


def fetch_v4(correlation_id):
    client = b"fetch-loop"
    header = struct.pack(">hhih", 1, 4, correlation_id, len(client)) + client
    body = struct.pack(">iiiib", -1, 0, 1, max_bytes, 0)
    body += struct.pack(">ih", 1, len(topic)) + topic
    body += struct.pack(">iiqi", 1, 0, 0, max_bytes)
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


sock = socket.create_connection((host, int(port)))
buf = bytearray(max_bytes + (1 << 20))
view = memoryview(buf)
responses = total = 0
deadline = time.time() + seconds
while time.time() < deadline:
    responses += 1
    sock.sendall(fetch_v4(responses))
    got = 0
    while got < 4:
        got += sock.recv_into(view[got:4])
    size = struct.unpack(">i", view[:4])[0]
    got = 0
    while got < size:
        n = sock.recv_into(view[: min(size - got, len(buf))])
        if n == 0:
            raise SystemExit("connection closed")
        got += n
    total += size
print(responses, total)
