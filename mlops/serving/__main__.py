"""Run the model server under uvicorn.

python -m mlops.serving --model NAME --host 127.0.0.1 --port 8000 [--workers 2]
python -m mlops.serving --config configs/default.yaml     (model name and `serving` from the config)

Environment: MLOPS_HOME / MLFLOW_TRACKING_URI (where the registry is), MLOPS_SERVING_TOKEN (bearer
token for the scoring routes, optional), MLOPS_SERVING_ADMIN_TOKEN (for /admin/reload; falls back
to MLOPS_SERVING_TOKEN), MLOPS_LOG_HASH_KEY (HMAC key for sensitive columns in the prediction log);
all read through mlops.core.settings (docs/settings.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys

from mlops.core import startup
from mlops.core.config import ServingConfig, load_config
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment

DEFAULT_PORT = 8000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.serving",
        description="Serve models:/NAME@champion: POST /predict, POST /invocations, GET /health /ready /model /metrics.",
    )
    parser.add_argument("--model", help="registered model name (default: registry.model_name of --config)")
    parser.add_argument("--config", help="pipeline config whose `serving` section applies")
    parser.add_argument("--alias", default="champion", help="alias to serve and watch (default: champion)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: serving.workers, 1)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: from MLOPS_HOME)")
    parser.add_argument("--poll-seconds", type=float, default=None, help="how often to check the alias")
    parser.add_argument("--log-dir", default=None, help="prediction log folder (default: $MLOPS_HOME/predictions)")
    parser.add_argument("--no-prediction-log", action="store_true", help="do not log predictions")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    startup.one_native_thread()  # one BLAS/OpenMP thread per worker, before numpy loads (workers inherit it)
    # Fail fast against an unreachable tracking server; the watcher retries on its own schedule.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    serving = ServingConfig()
    name = args.model
    if args.config:
        try:
            cfg = load_config(args.config)
        except MLOpsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        serving = cfg.serving
        name = name or cfg.registry.model_name
    if not name:
        parser.error("give --model NAME or --config FILE")
    updates = {}
    if args.poll_seconds is not None:
        updates["poll_seconds"] = args.poll_seconds
    if args.workers is not None:
        updates["workers"] = args.workers
    if args.no_prediction_log:
        updates["log_predictions"] = False
    serving = ServingConfig.model_validate({**serving.model_dump(), **updates})

    settings = configure_environment()
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ["MLOPS_SERVING_MODEL"] = name
    os.environ["MLOPS_SERVING_ALIAS"] = args.alias
    os.environ["MLOPS_SERVING_CONFIG_JSON"] = json.dumps(serving.model_dump(mode="json"))
    os.environ["MLOPS_SERVING_LOG_DIR"] = args.log_dir or str(settings.prediction_log_dir)

    # after the thread variables: the app loads numpy
    import uvicorn

    from mlops.serving.app import SHARE_DIR_ENV, app_from_env, make_share_dir

    common = dict(host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                  server_header=False, loop="uvloop", http="httptools")
    if serving.workers == 1:
        uvicorn.run(app_from_env(), **common)
        return 0
    share = make_share_dir()
    os.environ[SHARE_DIR_ENV] = str(share)
    try:
        uvicorn.run("mlops.serving.app:app_from_env", factory=True, workers=serving.workers, **common)
    finally:
        shutil.rmtree(share, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
