"""Request bodies, bounded: read within `serving.max_body_bytes`, counted against the bytes the service may hold
at once, and a refused body drained (a bounded amount) so that every client reads the 413."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from mlops.serving.batching import BatcherFull
from mlops.serving.schema import RequestError


class ByteBudget:
    """The request bytes the service holds at once (bodies being read, parsed or waiting for the model).

    One event loop owns it, so taking and giving back need no lock. Past it, a request is refused
    with 503 rather than read: a flood of large valid requests cannot grow memory without bound.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise BatcherFull(
                f"the service already holds {self.used:,} request bytes (serving.max_inflight_bytes {self.limit:,})"
            )
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


async def read_body(request: Request, limit: int, budget: ByteBudget | None = None) -> bytes:
    """The request body; RequestError 413 as soon as it is known to be longer than `limit` bytes.

    With a `budget`, the bytes read are taken from it as they arrive (BatcherFull when it is spent);
    the caller gives back `len(body)` when the request is answered.
    """
    too_large = RequestError(
        f"The request body is larger than this service accepts: at most {limit:,} bytes "
        "(serving.max_body_bytes). Send fewer rows per request.",
        status=413,
        error_code="RESOURCE_LIMIT_EXCEEDED",
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise RequestError(f"Content-Length must be a number of bytes, got {declared[:40]!r}")
        if len(declared.lstrip("0")) > len(str(limit)) or int(declared) > limit:
            await drain(request, int(declared) if len(declared) < 20 else None)
            raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():  # counted as it arrives: a chunked body has no Content-Length
            if len(body) + len(chunk) > limit:
                await drain(request, None)
                raise too_large
            if budget is not None:
                budget.take(len(chunk))
            body += chunk
    except BaseException:
        if budget is not None:
            budget.give(len(body))
        raise
    return bytes(body)


DRAIN_BYTES = 16 * 1024 * 1024  # of a refused body, read and thrown away at most


async def drain(request: Request, declared: int | None) -> None:
    """Read and discard the rest of a refused body, up to DRAIN_BYTES, so that a client that sends its whole
    body before reading (Python's urllib and requests) reads the 413 instead of a connection reset: closing
    a socket with unread bytes makes the kernel answer with RST. Nothing is kept, so memory stays bounded;
    a client that asked `Expect: 100-continue` has sent nothing yet and is answered at once, as is a body
    declared longer than the bound (it would be reset anyway)."""
    if request.headers.get("expect", "").lower() == "100-continue" or (declared or 0) > DRAIN_BYTES:
        return
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_BYTES:
                return
    except (ClientDisconnect, RuntimeError):  # gone, or the stream was already consumed
        return
