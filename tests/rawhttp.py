"""Raw HTTP/1.1 over a socket, for requests no client library sends: bytes as they go on the wire.

`request_bytes` builds a request (any header bytes, a lying or missing Content-Length, chunked
bodies); `exchange` sends it on a fresh connection and reads the answer while still sending, as
a server may answer (and close) before the body is through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

HeaderValue = str | bytes
AUTO: Literal["auto"] = "auto"
SEND_SLICE = 256 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    """`body` in Transfer-Encoding: chunked framing."""
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def request_bytes(
    path: str,
    headers: Sequence[tuple[str, HeaderValue]],
    body: bytes = b"",
    *,
    method: str = "POST",
    length: int | str | Literal["auto"] | None = AUTO,
    chunk: bool = False,
    close: bool = True,
) -> bytes:
    """One request, by default asking to close the connection after it. `length`: AUTO (the
    body's), a value (lying, or not a number), or None (no Content-Length header)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: arbiter.test"]
    for name, value in headers:
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if chunk:
        lines.append(b"Transfer-Encoding: chunked")
        body = chunked(body)
    elif length == AUTO:
        lines.append(b"Content-Length: %d" % len(body))
    elif length is not None:
        lines.append(f"Content-Length: {length}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_answer(reader: asyncio.StreamReader) -> Answer | None:
    """The next answer on the connection, or None when it closes first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    status = int(status_line.split(" ", 2)[1])
    length = int(headers.get("content-length", "0"))
    try:
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        body = b""
    return Answer(status, headers, body)


async def _send(writer: asyncio.StreamWriter, parts: Sequence[bytes], half_close: bool) -> None:
    with contextlib.suppress(ConnectionError):
        for part in parts:
            view = memoryview(part)  # slices of a view copy nothing: bodies can be shared
            for start in range(0, len(view), SEND_SLICE):
                writer.write(view[start : start + SEND_SLICE])
                await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()


async def exchange(
    host: str,
    port: int,
    data: bytes | Sequence[bytes],
    *,
    half_close: bool = False,
    timeout: float = 60,
) -> Answer | None:
    """Send `data` (or its parts in turn) on a new connection; the first answer, or None if the
    server closed without one. `half_close` shuts the sending side after it (a body cut short)."""
    parts = [data] if isinstance(data, bytes) else data
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    sending = asyncio.create_task(_send(writer, parts, half_close))
    try:
        async with asyncio.timeout(timeout):
            return await read_answer(reader)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
