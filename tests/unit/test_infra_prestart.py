"""Infra validation's fresh process started ahead (what `mlops monitor` does before a retrain may run):
handed out once, replaced when it died, ended at exit when nobody took it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlops.serving import infra_validation as iv


@pytest.fixture(autouse=True)
def no_spare() -> Iterator[None]:
    iv._close_spare()
    yield
    iv._close_spare()


def test_a_prestarted_process_is_handed_out_once() -> None:
    spare = iv.prestart_fresh_process()
    assert iv.prestart_fresh_process() is spare and spare.alive()  # idempotent
    taken = iv.take_fresh_process()
    try:
        assert taken is spare and taken.alive()
        again = iv.take_fresh_process()  # nothing prestarted any more: a new one
        try:
            assert again is not spare and again.alive()
        finally:
            again.close()
    finally:
        taken.close()


def test_a_dead_spare_is_replaced_and_an_unused_one_ends_at_exit() -> None:
    spare = iv.prestart_fresh_process()
    assert spare.proc is not None
    spare.proc.kill()
    spare.proc.wait()
    fresh = iv.take_fresh_process()
    try:
        assert fresh is not spare and fresh.alive()
    finally:
        fresh.close()
    unused = iv.prestart_fresh_process()
    proc = unused.proc
    assert proc is not None
    iv._close_spare()  # what atexit runs
    assert proc.poll() is not None and not unused.alive()


def test_a_process_with_a_job_is_not_alive_for_another() -> None:
    p = iv.FreshProcess()
    try:
        p.start(["--help"])
        assert not p.alive()
    finally:
        p.close()
