"""The start-up garbage of `serve` and `worker` goes back to the system (issue 20)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from bot.cli import server


def test_the_freed_heap_is_handed_back_on_glibc() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    server._release_free_heap()  # one call into the C library; it must not fail


def test_elsewhere_nothing_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", lambda *_: pytest.fail("no C library call"))
    server._release_free_heap()


def test_a_libc_without_malloc_trim_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *_: object())  # musl: no malloc_trim
    server._release_free_heap()
