"""Every route answered, counted, timed and logged the same way: errors become Notify's bodies, and each
request counts under Notify's name `{environment}.notifications.api.{METHOD}.{module}.{function}.{status}`
(statsd: Notify's API app is `api`, so the name sits under the environment, not under the gateway's
app prefix) and `herald_api_total` / `herald_api_seconds` with those labels (Prometheus)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response

from herald import metrics
from services.gateway.errors import NotifyError, from_rpc_error

log = logging.getLogger("services.gateway")

Handler = Callable[[Request], Awaitable[Response]]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: NotifyError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code)


def observed(module: str, function: str, handler: Handler) -> Handler:
    """`handler` behind the one error mapping, the request metrics and an access log line (no query
    string, no body: they can hold personal data)."""

    async def endpoint(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await handler(request)
        except NotifyError as exc:
            response = error_response(exc)
        except grpc.RpcError as exc:
            response = error_response(from_rpc_error(exc))
        except Exception as exc:
            log.exception("unexpected error", extra={"route": f"{module}.{function}", "error": type(exc).__name__})
            response = error_response(NotifyError.one(500, "InternalServerError", "Internal server error"))
        elapsed = time.perf_counter() - start
        labels = {"method": request.method, "module": module, "function": function, "status": str(response.status_code)}
        metrics.incr("api", 1, statsd_root=True, **labels)
        metrics.observe("api", elapsed, statsd_root=True, **labels)
        log.info(
            "request",
            extra={
                "http_method": request.method,
                "route": f"{module}.{function}",
                "status": response.status_code,
                "path": request.url.path,
                "ms": round(elapsed * 1000, 2),
            },
        )
        return response

    endpoint.__name__ = function
    return endpoint
