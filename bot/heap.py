"""The garbage collector and a long-running process's heap.

What a process builds once and keeps (the libraries it imports, its settings, its runtime) is
moved out of the collector's reach (`gc.freeze`): a full collection walks every tracked object
it can reach, and an event loop stands still while it does. At start, the server and the worker
settle what start-up built; a process that reviews settles once more after its first review,
when the review core, the model's SDK and the tokenizer are loaded (the full collections after
it took 16-20 ms each on the worker bench, about 1 ms once settled).

A frozen object still goes when its last reference does; only garbage in reference cycles among
frozen objects stays, so this is done at these few moments, never on a schedule.
"""

from __future__ import annotations

import gc
import sys
import time

from bot.logs import get_logger


def settle(moment: str) -> None:
    """Collect what is garbage now, then freeze every object left (`moment`, for the log)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    release_free_heap()
    get_logger(component="heap").debug(
        "heap settled",
        moment=moment,
        frozen=gc.get_freeze_count(),
        ms=round((time.perf_counter() - started) * 1000, 1),
    )


def release_free_heap() -> None:
    """Hand the C heap freed so far (import-time garbage) back to the system: about 1 MiB of an
    idle process's resident memory (issue 20). glibc only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # not glibc (musl has no malloc_trim)
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
