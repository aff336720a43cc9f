"""Composition root of the REST gateway: the ASGI app, and the two ways to run it on uvicorn."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald import logs, metrics
from herald.settings import Settings
from services.gateway import openapi
from services.gateway.calls import Callbacks, Ingest
from services.gateway.observability import JSONResponse, observed
from services.gateway.routes import Routes
from services.gateway.webhooks import Webhooks, sns_urls

log = logging.getLogger(__name__)
Stop = Callable[[], None]

# Flask's texts: Notify answers unknown routes and methods from its app-level handlers, in this shape.
_ROUTE_ERRORS = {
    404: "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again.",
    405: "The method is not allowed for the requested URL.",
}


async def _route_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    return JSONResponse({"result": "error", "message": _ROUTE_ERRORS.get(code, "Internal server error")}, code)


def build_app(settings: Settings, *, may_fetch: Callable[[str], bool] | None = None) -> Starlette:
    """`may_fetch`: which SNS certificate and SubscribeURLs may be fetched (by default Amazon SNS's own and
    those under HERALD_SNS_TRUSTED_URL_PREFIX; tests widen it)."""
    ingest = Ingest(settings.ingest_address)
    callbacks = Callbacks(settings.callbacks_address)
    credentials = settings.callback_credentials()
    if may_fetch is None:
        may_fetch = sns_urls(settings.sns_trusted_url_prefix)
    document = openapi.document()

    async def status(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # grpc.aio binds a channel to the loop it is made on: the server's.
        await ingest.open()
        await callbacks.open()
        yield
        await callbacks.close()
        await ingest.close()

    app = Starlette(
        routes=[
            *Routes(ingest).table(),
            *Webhooks(callbacks, credentials, may_fetch).table(),
            Route("/_status", observed("status", "show_status", status), methods=["GET"]),
            Route("/openapi.json", observed("openapi", "get_openapi", openapi_json), methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={404: _route_error, 405: _route_error},
    )
    app.router.redirect_slashes = False  # as Flask's strict slashes: "/v2/notifications/" is no route
    return app


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _config(settings: Settings, app: Starlette) -> uvicorn.Config:
    host, port = _host_port(settings.gateway_address)
    # uvicorn's own logging is off: the access line is the app's, in herald's JSON. Requests in flight get
    # 10 s after SIGTERM, as the gRPC servers' calls do, within Kubernetes' 30 s grace.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


def serve(settings: Settings) -> None:
    """`herald gateway`: runs until SIGTERM or SIGINT; requests in flight are finished first."""
    logs.configure("gateway", settings.log_level)
    metrics.configure(
        settings.environment,
        "gateway",
        settings.statsd_host,
        settings.statsd_port,
        settings.metrics_port,
        statsd_enabled=settings.statsd_enabled,
    )
    log.info("gateway listening", extra={"address": settings.gateway_address, "ingest": settings.ingest_address})
    uvicorn.Server(_config(settings, build_app(settings))).run()


def start_gateway(settings: Settings, *, may_fetch: Callable[[str], bool] | None = None) -> Stop:
    """The gateway on a thread of this process (tests; `herald gateway` runs it as its own process), serving once this
    returns; logs and metrics as the process configured them."""
    server = uvicorn.Server(_config(settings, build_app(settings, may_fetch=may_fetch)))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="gateway", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the gateway could not start on {settings.gateway_address}")
        threading.Event().wait(0.01)
    log.info("gateway listening", extra={"address": settings.gateway_address})

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)

    return stop
