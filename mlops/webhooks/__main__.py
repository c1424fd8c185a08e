"""Run the webhook bridge under uvicorn.

python -m mlops.webhooks --config configs/webhooks.yaml --host 127.0.0.1 --port 4300
"""

from __future__ import annotations

import argparse
import logging
import sys

from mlops.core.errors import ConfigError
from mlops.core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.webhooks",
        description="Turn signed webhook calls into Prefect events (POST /hooks/{source}, GET /health).",
    )
    parser.add_argument("--config", default="configs/webhooks.yaml", help="webhook sources file")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=Settings.model_fields["webhook_port"].default)
    parser.add_argument(
        "--prefect-api-url", default=None, help="Prefect API, e.g. http://127.0.0.1:4200/api (default: PREFECT_API_URL)"
    )
    parser.add_argument(
        "--state-dir", default=None, help="where seen deliveries are kept (default: $MLOPS_HOME/webhooks)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # here: the app pulls in Starlette and Prefect, which `--help` and a bad argument do without
    import uvicorn

    from mlops.webhooks.app import create_app

    try:
        app = create_app(args.config, prefect_api_url=args.prefect_api_url, state_dir=args.state_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    # No access log: one line per request is noise at webhook rates; the app logs each outcome.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, server_header=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
