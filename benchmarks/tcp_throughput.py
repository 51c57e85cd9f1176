#!/usr/bin/env python3
"""One TCP stream's throughput, for distributed_netns.sh: what the shaped link carries without MPI.

    tcp_throughput.py serve ADDR PORT          accepts one connection, reads to EOF, prints MB/s (1e6 B)
    tcp_throughput.py send ADDR PORT MB        connects and sends MB megabytes
"""
import socket
import sys
import time


def serve(addr: str, port: int) -> None:
    with socket.create_server((addr, port)) as srv:
        conn, _ = srv.accept()
        with conn:
            got, t0 = 0, None
            while True:
                chunk = conn.recv(1 << 20)
                if t0 is None:
                    t0 = time.perf_counter()
                if not chunk:
                    break
                got += len(chunk)
            seconds = time.perf_counter() - t0
    print(f"{got / 1e6 / seconds:.1f}")


def send(addr: str, port: int, mb: int) -> None:
    block = bytes(1 << 20)
    for _ in range(100):  # the server may still be starting
        try:
            conn = socket.create_connection((addr, port))
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    else:
        sys.exit(f"tcp_throughput: nothing listens on {addr}:{port}")
    with conn:
        left = mb * 1_000_000
        while left > 0:
            n = min(left, len(block))
            conn.sendall(block[:n])
            left -= n


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
