"""The benches' own process collects no garbage while it measures (bench/harness.py, issue 20),
and collects again afterwards as it did before, whatever the measurement raised."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bench.harness import never_collecting


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """This test process's collector as it was: enabled, nothing frozen."""
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_measurement_runs_with_the_collector_off_and_the_heap_frozen(
    collector_restored: None,
) -> None:
    assert gc.isenabled()
    with never_collecting():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # what was there before is out of the way
    assert gc.isenabled()


def test_the_collector_comes_back_when_the_measurement_fails(collector_restored: None) -> None:
    with pytest.raises(SystemExit), never_collecting():
        raise SystemExit("not every delivery was answered 202")
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off(collector_restored: None) -> None:
    gc.disable()
    with never_collecting():
        pass
    assert not gc.isenabled()
