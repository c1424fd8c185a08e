"""Webhook bridge: turns a signed HTTP call into a Prefect event.

The open-source Prefect server has events and automations but no webhooks; this small ASGI app
fills the gap. Deployment triggers in prefect.yaml then turn the events into flow runs.

    from mlops.webhooks.app import create_app
    from mlops.webhooks.signing import sign
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # create_app pulls in Starlette and Prefect; the signing CLI should not pay for that.
    if name == "create_app":
        from mlops.webhooks.app import create_app

        return create_app
    raise AttributeError(name)
