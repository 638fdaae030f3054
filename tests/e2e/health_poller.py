"""Poll `GET /health` from a process of its own, printing each answer's latency, until stdin closes.

    python -m tests.e2e.health_poller http://127.0.0.1:PORT [interval_seconds]

Its own process, so the test's work (building bodies, hashing) cannot delay a poll and pass for
a stalled server. One line per poll: `<started, epoch> <seconds> <status>`, or
`<started> <seconds> error <reason>`.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    url = urlsplit(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    stop = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    while not stop.is_set():
        at, started = time.time(), time.monotonic()
        try:
            connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
            connection.request("GET", "/health")
            status = connection.getresponse().status
            connection.close()
            line = f"{at:.3f} {time.monotonic() - started:.4f} {status}"
        except OSError as exc:
            line = f"{at:.3f} {time.monotonic() - started:.4f} error {exc!r}"
        print(line, flush=True)
        stop.wait(interval)


if __name__ == "__main__":
    main()
