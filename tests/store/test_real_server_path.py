"""`ARBITER_TEST_MONGODB_URL` runs the store suite on a real server: its set-up, which runs
inside the test's event loop, reaches the server rather than failing before it asks."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, free_port
from tests.store.conftest import MONGODB_ENV, _run_alone


async def _answer() -> int:
    return 42


async def test_the_set_up_helper_works_inside_a_running_event_loop() -> None:
    # Where the session fixture runs: requested by the async `backend` fixture, in its loop.
    assert _run_alone(_answer()) == 42


def test_a_configured_server_is_asked_and_its_absence_named() -> None:
    port = free_port()  # nothing listens there
    url = f"mongodb://127.0.0.1:{port}/"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"),
            "tests/store/test_contract.py::test_schema_is_at_head",
            "-k",
            "mongodb",
        ],
        cwd=ROOT,
        env={**os.environ, MONGODB_ENV: url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert f"{MONGODB_ENV} is set but MongoDB is unreachable" in result.stdout
    assert f"127.0.0.1:{port}" in result.stdout  # the driver's own reason, naming the server
    assert "asyncio.run()" not in result.stdout
