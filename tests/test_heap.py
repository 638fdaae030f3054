"""A long-running process's heap: what it keeps is moved out of the garbage collector's reach
once built, and the start-up garbage goes back to the system (issue 20)."""

from __future__ import annotations

import ctypes
import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from bot import heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test process's heap as it was: everything frozen goes back to the collector."""
    try:
        yield
    finally:
        gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settling_collects_the_garbage_then_freezes_what_is_left(unfrozen: None) -> None:
    kept = _Node()
    cycle = _Node()
    cycle.other = cycle  # garbage only a collection frees
    gone = weakref.ref(cycle)
    del cycle
    before = gc.get_freeze_count()
    heap.settle("test")
    assert gone() is None  # collected, not frozen for good
    assert gc.get_freeze_count() > before
    assert not any(o is kept for o in gc.get_objects())  # out of every generation's walk
    assert kept.other is None  # and still there


def test_the_freed_heap_is_handed_back_on_glibc() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    heap.release_free_heap()  # one call into the C library; it must not fail


def test_elsewhere_nothing_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", lambda *_: pytest.fail("no C library call"))
    heap.release_free_heap()


def test_a_libc_without_malloc_trim_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *_: object())  # musl: no malloc_trim
    heap.release_free_heap()
