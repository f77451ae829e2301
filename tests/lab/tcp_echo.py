"""A TCP echo stream for the lab's VMs, run inside a VM's namespace with the system python3.

  tcp_echo.py server IP PORT              echo one connection until it ends
  tcp_echo.py client IP PORT READY STOP   send a numbered 8-byte message every 10 ms and check
                                          its echo; READY is written after the first 20 echoes,
                                          the stream ends once the file STOP exists

The client prints one JSON line: how many messages came back, the longest wait for one (ms),
and the error that ended the stream early (a reset, a timeout, a wrong echo), if any; its exit
status is 0 only when the stream ended because STOP appeared.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

INTERVAL = 0.01
RECV_TIMEOUT = 10.0


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def server(ip: str, port: int) -> None:
    with socket.create_server((ip, port)) as srv:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def client(ip: str, port: int, ready: str, stop: str) -> int:
    echoed, longest, error = 0, 0.0, None
    try:
        with socket.create_connection((ip, port), timeout=RECV_TIMEOUT) as sock:
            while not os.path.exists(stop):
                sent = time.monotonic()
                sock.sendall(struct.pack("!Q", echoed))
                if struct.unpack("!Q", recv_exactly(sock, 8))[0] != echoed:
                    raise ValueError(f"message {echoed}: a wrong echo")
                longest = max(longest, time.monotonic() - sent)
                echoed += 1
                if echoed == 20:
                    with open(ready, "w") as f:
                        f.write("ready\n")
                time.sleep(INTERVAL)
    except (OSError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    print(json.dumps({"echoed": echoed, "longest_ms": round(longest * 1000, 1), "error": error}),
          flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(client(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
