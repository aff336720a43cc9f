"""The v2 routes: each reads the request, checks its shape as Notify's schemas do, calls ingest and
answers with Notify's body. Business rules and their messages are ingest's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NoReturn

import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.domain import apikeys
from herald.v1 import ingest_pb2, reads_pb2
from services.gateway import bodies, validation
from services.gateway.calls import Ingest
from services.gateway.errors import BAD_REQUEST, VALIDATION, NotifyError, from_rpc_error
from services.gateway.observability import Handler, JSONResponse, observed
from services.gateway.reading import json_body

LIST_QUERY: Final = ("reference", "status", "template_type", "include_jobs", "older_than")
MAX_INT32: Final = 2**31 - 1
# Herald's own extension: a repeat under the same key is the same notification (see ingest.proto).
IDEMPOTENCY_HEADER: Final = "idempotency-key"


def _invalid(messages: list[str]) -> NotifyError:
    return NotifyError(400, [(VALIDATION, message) for message in messages])


def _struct(field: str, value: Mapping[str, Any] | None) -> Struct:
    out = Struct()
    try:
        out.update(value or {})
    except (ValueError, OverflowError, TypeError):  # a number no protobuf double holds
        raise _invalid([f"{field} holds a number out of range"]) from None
    return out


def _timestamp(value: str | None) -> Timestamp | None:
    """A scheduled_for the schema has checked (an ISO 8601 time, or null)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(validation.parse_datetime(value))
    return stamp


def _idempotency_key(request: Request) -> str | None:
    """Passed on as gRPC metadata, which takes printable ASCII only; ingest checks the rest."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not (key.isascii() and key.isprintable()):
        raise NotifyError.one(400, BAD_REQUEST, "Idempotency-Key must be printable ASCII")
    return key


def _service_id(authorization: str | None) -> str:
    """The service of a token ingest has just accepted: its `iss`."""
    return apikeys.issuer(apikeys.token_from_header(authorization))


class Routes:
    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    def table(self) -> list[Route]:
        """Each route with its (module, function), the names its metrics carry (Notify's endpoints)."""
        table: list[tuple[str, str, str, str, Handler]] = [
            ("POST", "/v2/notifications/sms", "notifications", "send_notification", self.send_sms),
            ("POST", "/v2/notifications/email", "notifications", "send_notification", self.send_email),
            ("POST", "/v2/notifications/letter", "notifications", "send_notification", self.send_letter),
            ("GET", "/v2/notifications", "notifications", "get_notifications", self.list_notifications),
            ("GET", "/v2/notifications/{notification_id}", "notifications", "get_notification_by_id",
             self.get_notification),
            ("GET", "/v2/template/{template_id}", "template", "get_template_by_id", self.get_template),
            ("GET", "/v2/template/{template_id}/version/{version:int}", "template", "get_template_by_id",
             self.get_template_version),
            ("POST", "/v2/template/{template_id}/preview", "template", "post_template_preview", self.preview),
            ("GET", "/v2/templates", "templates", "get_templates", self.list_templates),
            ("GET", "/v2/received-text-messages", "inbound_sms", "get_inbound_sms", self.list_received_texts),
        ]  # fmt: skip
        return [
            Route(path, observed(module, function, handler), methods=[method])
            for method, path, module, function, handler in table
        ]

    async def _refuse(self, request: Request, error: NotifyError) -> NoReturn:
        """Notify checks the token before anything else: a bad token is an AuthError whatever the body."""
        await self._ingest.caller(request.headers.get("authorization"))
        raise error

    async def _body(
        self, request: Request, schema: validation.Schema, *, empty_is: Any = None, allow_unknown: bool = False
    ) -> dict[str, Any]:
        try:
            body = await json_body(request, empty_is=empty_is)
        except NotifyError as exc:
            await self._refuse(request, exc)
        problems = validation.errors(body, schema, allow_unknown=allow_unknown)
        if problems:
            await self._refuse(request, _invalid(problems))
        return dict(body)

    async def send_sms(self, request: Request) -> Response:
        body = await self._body(request, validation.SMS)
        authorization = request.headers.get("authorization")
        answer = await self._ingest.send_sms(
            ingest_pb2.SendSmsRequest(
                phone_number=body["phone_number"],
                template_id=body["template_id"],
                personalisation=_struct("personalisation", body.get("personalisation")),
                reference=body.get("reference") or "",
                sms_sender_id=body.get("sms_sender_id") or "",
                scheduled_for=_timestamp(body.get("scheduled_for")),
            ),
            authorization,
            _idempotency_key(request),
        )
        return JSONResponse(bodies.sent(answer, str(request.base_url), _service_id(authorization)), status_code=201)

    async def send_email(self, request: Request) -> Response:
        body = await self._body(request, validation.EMAIL)
        authorization = request.headers.get("authorization")
        answer = await self._ingest.send_email(
            ingest_pb2.SendEmailRequest(
                email_address=body["email_address"],
                template_id=body["template_id"],
                personalisation=_struct("personalisation", body.get("personalisation")),
                reference=body.get("reference") or "",
                sanitise_content_for=body.get("sanitise_content_for") or [],
                email_reply_to_id=body.get("email_reply_to_id") or "",
                one_click_unsubscribe_url=body.get("one_click_unsubscribe_url") or "",
                scheduled_for=_timestamp(body.get("scheduled_for")),
            ),
            authorization,
            _idempotency_key(request),
        )
        root = str(request.base_url)
        sent = bodies.sent(answer, root, _service_id(authorization), body.get("one_click_unsubscribe_url"))
        return JSONResponse(sent, status_code=201)

    async def send_letter(self, request: Request) -> Response:
        """Templated and precompiled letters (a body with `content`). Herald sends no letters: after
        the token and the body's shape, Notify's answer to a service without the letter permission."""
        try:
            body = await json_body(request)
        except NotifyError as exc:
            await self._refuse(request, exc)
        schema = validation.PRECOMPILED_LETTER if isinstance(body, dict) and "content" in body else validation.LETTER
        problems = validation.errors(body, schema)
        if problems:
            await self._refuse(request, _invalid(problems))
        await self._refuse(request, NotifyError.one(400, BAD_REQUEST, "Service is not allowed to send letters"))

    async def get_notification(self, request: Request) -> Response:
        listed = await self._ingest.notification(
            request.path_params["notification_id"], request.headers.get("authorization")
        )
        return JSONResponse(bodies.notification_with_cost(listed, str(request.base_url)))

    async def list_notifications(self, request: Request) -> Response:
        query = request.query_params.multi_items()
        problems = validation.query_errors(query, LIST_QUERY)
        problems += [
            f"include_jobs {value} is not one of [true, True]"
            for key, value in query
            if key == "include_jobs" and value not in ("true", "True")
        ]
        if problems:
            await self._refuse(request, _invalid(problems))
        first = {key: value for key, value in reversed(query)}  # Notify takes the first of a repeated one
        page = await self._ingest.notifications(
            reads_pb2.ListNotificationsRequest(
                template_type=[value for key, value in query if key == "template_type"],
                status=[value for key, value in query if key == "status"],
                reference=first.get("reference", ""),
                older_than=first.get("older_than", ""),
                include_jobs="include_jobs" in first,
            ),
            request.headers.get("authorization"),
        )
        root = str(request.base_url)
        listed = [bodies.notification(n.notification, root) for n in page.notifications]
        links = bodies.page_links(f"{root}v2/notifications", query, listed[-1]["id"] if listed else None)
        return JSONResponse({"notifications": listed, "links": links})

    async def get_template(self, request: Request) -> Response:
        template = await self._ingest.template(
            request.path_params["template_id"], 0, request.headers.get("authorization")
        )
        return JSONResponse(bodies.template(template))

    async def get_template_version(self, request: Request) -> Response:
        version: int = request.path_params["version"]
        if not 1 <= version <= MAX_INT32:  # 0 would ask ingest for the current version
            await self._refuse(request, NotifyError.one(404, "NoResultFound", "No result found"))
        template = await self._ingest.template(
            request.path_params["template_id"], version, request.headers.get("authorization")
        )
        return JSONResponse(bodies.template(template))

    async def list_templates(self, request: Request) -> Response:
        query = request.query_params.multi_items()
        problems = validation.query_errors(query, ("type",))
        if problems:
            await self._refuse(request, _invalid(problems))
        found = await self._ingest.templates(request.query_params.get("type", ""), request.headers.get("authorization"))
        return JSONResponse({"templates": [bodies.template(t) for t in found.templates]})

    async def preview(self, request: Request) -> Response:
        body = await self._body(request, validation.PREVIEW, empty_is={}, allow_unknown=True)
        try:
            answer = await self._ingest.preview(
                ingest_pb2.PreviewTemplateRequest(
                    template_id=request.path_params["template_id"],
                    personalisation=_struct("personalisation", body.get("personalisation")),
                ),
                request.headers.get("authorization"),
            )
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if error.errors == [(BAD_REQUEST, "Template not found")]:
                # Notify's preview route looks the template up by id and service: not found is a 404 there.
                raise NotifyError.one(404, "NoResultFound", "No result found") from None
            raise error from None
        return JSONResponse(bodies.preview(answer))

    async def list_received_texts(self, request: Request) -> Response:
        query = request.query_params.multi_items()
        problems = validation.query_errors(query, ("older_than",))
        if problems:
            await self._refuse(request, _invalid(problems))
        page = await self._ingest.received_texts(
            request.query_params.get("older_than", ""), request.headers.get("authorization")
        )
        base = f"{request.base_url}v2/received-text-messages"
        texts = [bodies.received_text(t) for t in page.received_texts]
        # Notify's `current` is the route without its query; `next` asks for what is older than the last text.
        links = bodies.page_links(base, [], texts[-1]["id"] if texts else None)
        return JSONResponse({"received_text_messages": texts, "links": links})
