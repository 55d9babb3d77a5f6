"""A proxy in front of the local warehouse that can refuse what a failing BigQuery refuses.

Forwards every request to the real warehouse, except that, while `refuse_uploads` is
set, the first request of every upload (``/upload/...``, where load jobs send their
rows) is answered with HTTP 400, as BigQuery answers a load it will not take. Nothing
in the code under test is patched: the job talks HTTP to this proxy as to any endpoint.

    with FaultyWarehouse(warehouse.endpoint) as proxy:
        proxy.refuse_uploads = True
        ... --bq_endpoint proxy.endpoint ...
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultyWarehouse:
    def __init__(self, upstream: str):
        self._upstream = urllib.parse.urlsplit(upstream)
        self.refuse_uploads = False
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.refuse_uploads and self.path.startswith("/upload/"):
                    proxy.refused += 1
                    payload = json.dumps({"error": {"code": 400, "message": "uploads refused by the test proxy",
                                                    "errors": [{"reason": "invalid"}]}}).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(proxy._upstream.hostname, proxy._upstream.port, timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value.replace(proxy._upstream.netloc, proxy.netloc))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.netloc = f"127.0.0.1:{self._server.server_address[1]}"
        self.endpoint = f"http://{self.netloc}"

    def __enter__(self) -> "FaultyWarehouse":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
