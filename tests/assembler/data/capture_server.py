"""Record OTLP/HTTP export bodies: `python capture_server.py PORT OUTDIR` saves each POST as NNN.bin (+ NNN.hdr)."""

import http.server
import itertools
import os
import sys

counter = itertools.count()
out = sys.argv[2]
os.makedirs(out, exist_ok=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        i = next(counter)
        with open(f"{out}/{i:03d}.bin", "wb") as f:
            f.write(body)
        with open(f"{out}/{i:03d}.hdr", "w") as f:
            f.write(f"{self.path}\n{self.headers}")
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
