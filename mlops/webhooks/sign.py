"""Print the curl headers that sign one webhook delivery.

    curl -sS http://127.0.0.1:4300/hooks/data-vendor --data-binary @payload.json \\
      $(python -m mlops.webhooks.sign --secret-env MLOPS_WEBHOOK_DATA_VENDOR_SECRET --body payload.json)

With --status-path instead of --body, it signs a status request (`GET /hooks/<source>/deliveries/<id>`):

    curl -sS http://127.0.0.1:4300/hooks/data-vendor/deliveries/ID \\
      $(python -m mlops.webhooks.sign --secret-env MLOPS_WEBHOOK_DATA_VENDOR_SECRET \\
        --status-path /hooks/data-vendor/deliveries/ID)

The secret is read from the named environment variable, never from the command line, so it stays
out of shell history and process listings. The printed headers hold no spaces, so `$(...)` splits
them safely; with --url the whole curl command is printed instead, shell-quoted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import uuid
from pathlib import Path

from mlops.core.settings import read_secret
from mlops.webhooks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, status_headers


def curl_header_args(secret: str, body: bytes, timestamp: int, delivery_id: str) -> list[str]:
    """The `-H Name:value` pairs for one signed delivery."""
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    args: list[str] = []
    for name, value in headers.items():
        args += ["-H", f"{name}:{value}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.webhooks.sign",
        description="Sign a webhook body and print curl headers (X-Mlops-Timestamp/Delivery/Signature).",
    )
    parser.add_argument("--secret-env", required=True, help="environment variable that holds the source's secret")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--body", help="file with the exact bytes to send ('-' for stdin)")
    what.add_argument("--status-path", help="sign a status request: GET of this path (/hooks/<source>/deliveries/<id>)")
    parser.add_argument("--delivery-id", default=None, help="unique delivery id (default: a new UUID)")
    parser.add_argument("--timestamp", type=int, default=None, help="unix seconds (default: now)")
    parser.add_argument("--url", default=None, help="print a complete curl command for this URL")
    args = parser.parse_args(argv)

    secret = read_secret(args.secret_env)
    if not secret:
        print(
            f"error: environment variable {args.secret_env} is not set; export the source's secret there",
            file=sys.stderr,
        )
        return 2
    if args.status_path:
        signed = status_headers(secret, args.status_path, timestamp=args.timestamp)
        print(" ".join(f"-H {name}:{value}" for name, value in signed.items()))
        return 0
    try:
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        print(f"error: cannot read body file {args.body}: {exc.strerror}", file=sys.stderr)
        return 2
    ts = int(time.time()) if args.timestamp is None else args.timestamp
    delivery = args.delivery_id or str(uuid.uuid4())
    if not delivery.isprintable() or " " in delivery:
        print("error: --delivery-id must be printable with no spaces", file=sys.stderr)
        return 2
    headers = curl_header_args(secret, body, ts, delivery)
    if args.url:
        data = "@-" if args.body == "-" else f"@{args.body}"
        cmd = ["curl", "-sS", "-X", "POST", args.url, *headers, "--data-binary", data]
        print(" ".join(shlex.quote(part) for part in cmd))
    else:
        print(" ".join(headers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
