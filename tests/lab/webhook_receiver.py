"""A webhook receiver for the lab, run in a service namespace with the system python3.

  webhook_receiver.py IP PORT FILE    answer every POST 200 and append its body to FILE as one
                                      JSON line; runs until killed
"""

from __future__ import annotations

import http.server
import json
import sys
from typing import Any


def main() -> None:
    ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with open(path, "a") as out:
                out.write(json.dumps(json.loads(body)) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http.server.HTTPServer((ip, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
