"""The demo's partner receiver: a separate process, as partner p-001 would run it.

    python -m orchestration.demo.receiver --secret-file S --out EVENTS.jsonl

It consents to the CloudEvents webhook handshake (answers `OPTIONS` with
`WebHook-Allowed-Origin: *`), verifies every delivery's Standard Webhooks signature with the
`standardwebhooks` library (401 when it does not verify), drops duplicates by `webhook-id`
(the idempotency key) and appends each new event to EVENTS.jsonl. It prints its port first.
The signing secret is read from S at the first delivery (it is known once the subscription
was created, after the handshake).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(secret_file: Path, out: Path, port: int = 0) -> ThreadingHTTPServer:
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    seen: set[str] = set()
    lock = threading.Lock()
    hook: list[Webhook] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_OPTIONS(self):
            self._answer(200, {"Allow": "POST", "WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": "*"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                if not hook:
                    hook.append(Webhook(secret_file.read_text().strip()))
            try:
                record = hook[0].verify(body, headers)
            except WebhookVerificationError:
                self._answer(401)
                return
            with lock:
                if headers["webhook-id"] not in seen:
                    seen.add(headers["webhook-id"])
                    event = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
                    event["data"] = record
                    with out.open("a") as f:
                        f.write(json.dumps(event) + "\n")
            self._answer(204)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = serve(args.secret_file, args.out, args.port)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
