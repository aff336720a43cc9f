"""Reading a request's JSON body: its type, its size (refused before it is all read) and its syntax."""

from __future__ import annotations

from typing import Any, Final

import orjson
from starlette.requests import Request

from services.gateway.errors import BAD_REQUEST, NotifyError, invalid_json

MAX_BODY_BYTES: Final = 10 * 1024 * 1024  # 10 MB: five times what an email may hold, with its personalisation


def too_large() -> NotifyError:
    return NotifyError.one(400, BAD_REQUEST, f"Request body too large: at most {MAX_BODY_BYTES} bytes")


def _is_json(content_type: str) -> bool:
    """What Flask's `is_json` accepts: application/json, or application/*+json."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


async def body_bytes(request: Request) -> bytes:
    """At most MAX_BODY_BYTES: a declared length above it is refused unread, a longer stream as soon as
    it passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, *, empty_is: Any = None) -> Any:
    """The parsed body. `empty_is`: what an empty body stands for (Notify's preview takes none at all);
    None: an empty body is invalid JSON."""
    raw = await body_bytes(request)
    if not raw and empty_is is not None:
        return empty_is
    if not _is_json(request.headers.get("content-type", "")):
        raise invalid_json()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # bad syntax, bad UTF-8, NaN, nesting deeper than orjson's limit
        raise invalid_json() from None
