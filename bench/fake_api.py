#!/usr/bin/env python3
"""A minimal agents'-API server for the idle benchmark: accepts every Muster and seed
request and answers with the shapes the agents expect. Not a test oracle, only a peer.

usage: fake_api.py PORT
"""
import gzip
import json
import sys
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = json.loads(body or b"{}")
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        if self.path.endswith("/agents/register"):
            answer = {"agent_id": "bench-agent", "agent_token": uuid.uuid4().hex}
        elif self.path.endswith("/agents/heartbeat"):
            answer = {"pending_commands": 0, "server_time": now}
        elif self.path.endswith("/system/report"):
            answer = {"report_id": request.get("report", request).get("report_id", str(uuid.uuid4())),
                      "hash": request.get("hash"), "duplicate": False}
        elif self.path.endswith("/metrics/report"):
            answer = {"report_id": request.get("report_id", str(uuid.uuid4())),
                      "accepted": len(request.get("samples", [])), "duplicate": False}
        else:
            answer = {}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
