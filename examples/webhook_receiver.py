#!/usr/bin/env python3
"""A webhook receiver that verifies what the orchestrator signs.

    python examples/webhook_receiver.py --port 8088 --secret webhook-secret [--log FILE]

Configure the orchestrator with the same secret:

    [webhooks]
    enabled = true
    endpoints = [{url = "http://127.0.0.1:8088/hook", events = ["*"], secret = "webhook-secret"}]

For each POST it checks, with the standard library only:

1. `X-Signature-256` = "sha256=" + HMAC-SHA256(secret, "{X-Webhook-Timestamp}.{canonical}")
   and the timestamp is recent (replays of old deliveries are refused);
2. the body's `signature` = "sha256=" + HMAC-SHA256(secret, canonical), where
   `canonical` is the body without `signature`, serialized with sorted keys, compact
   separators and UTF-8 (`json.dumps(..., sort_keys=True, separators=(",", ":"),
   ensure_ascii=False)`);
3. `X-Webhook-Id` was not seen before: a redelivery after a crash is acknowledged and
   dropped.

Verified deliveries are printed (or appended to --log) as JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_AGE = 300  # seconds a delivery's timestamp may be old


def sign(secret: str, message: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes) -> tuple[bool, str, dict]:
    payload = json.loads(body)
    claimed = payload.pop("signature", "")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    stamp = headers.get("x-webhook-timestamp", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_AGE:
        return False, "stale or missing timestamp", payload
    if not hmac.compare_digest(
        headers.get("x-signature-256", ""), sign(secret, f"{stamp}.{canonical}")
    ):
        return False, "bad X-Signature-256", payload
    if not hmac.compare_digest(claimed, sign(secret, canonical)):
        return False, "bad body signature", payload
    return True, "ok", payload


def make_handler(secret: str, out):
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            ok, reason, payload = verify(secret, headers, body)
            delivery = headers.get("x-webhook-id", "")
            if not ok:
                self.send_response(401)
            else:
                duplicate = delivery in seen
                seen.add(delivery)
                record = {"id": delivery, "duplicate": duplicate, **payload}
                out.write(json.dumps(record) + "\n")
                out.flush()
                self.send_response(200)
            self.end_headers()
            self.wfile.write(reason.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--log", help="append verified deliveries here (default: stdout)")
    arguments = parser.parse_args()
    out = open(arguments.log, "a") if arguments.log else sys.stdout  # noqa: SIM115
    server = ThreadingHTTPServer(("127.0.0.1", arguments.port), make_handler(arguments.secret, out))
    print(f"listening on 127.0.0.1:{arguments.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
