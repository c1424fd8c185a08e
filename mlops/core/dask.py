"""Reaching a Dask scheduler, written once for tuning (`search.backend: dask`) and batch scoring
(`scoring.backend: dask`): the address the config section or MLOPS_DASK_ADDRESS names, and a client whose
failure to connect is one sentence. `distributed` is imported only when a client is made."""

from __future__ import annotations

from typing import Any

from mlops.core.errors import ConfigError
from mlops.core.settings import Settings

CONNECT_SECONDS = 30.0  # how long a run waits for the scheduler to answer


def scheduler_address(configured: str | None, settings: Settings, section: str) -> str:
    """`<section>.dask_address`, else MLOPS_DASK_ADDRESS; neither is one sentence."""
    address = configured or settings.dask_address
    if not address:
        raise ConfigError(f"{section}.backend is dask but no scheduler is given: set {section}.dask_address in the "
                          "config or MLOPS_DASK_ADDRESS (`mlops up --dask` sets it for its flows)")
    return address


def connect(address: str, section: str) -> Any:
    """A `distributed.Client` on `address` (not made the default client); no answer is one sentence."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"no Dask scheduler answers at {address} ({str(exc).splitlines()[0][:160]}); start one "
                          f"(`mlops up --dask`) or correct {section}.dask_address / MLOPS_DASK_ADDRESS") from None
