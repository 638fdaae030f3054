"""What the benches' own process does so that it does not weigh on what they measure."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def never_collecting() -> Iterator[None]:
    """No garbage collection in this process (the bench's: its load generator and fakes) while
    a measurement runs. The fakes answer and the load generator sends from its event loop, and
    a full collection of its heap (what it imported, the fakes' record of every request) took
    35-70 ms here: every fake answer, or every delivery, in flight stood still meanwhile, a
    stall that GitHub, the model or a real sender does not have and the figure charged to the
    server measured. The heap is collected and frozen first (what was frozen stays out of
    later collections' way); collection resumes after, as it was, whatever the measurement
    raised."""
    enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
