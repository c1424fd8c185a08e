"""Model server: serves `models:/NAME@champion` over HTTP, hot-swaps on alias moves, logs every prediction.

    python -m mlops.serving --model NAME --host 127.0.0.1 --port 8000
    from mlops.serving import create_app
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # create_app pulls in Starlette, numpy and the registry code; `--help` should not pay for that.
    if name == "create_app":
        from mlops.serving.app import create_app

        return create_app
    raise AttributeError(name)
