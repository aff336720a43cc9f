"""The gateway's OpenAPI 3.1 document, served at /openapi.json: what each route accepts (the same
definitions the gateway validates with) and every body it answers with."""

from __future__ import annotations

from typing import Any, Final

from services.gateway import validation
from services.gateway.reading import MAX_BODY_BYTES

_STRING: Final = {"type": "string"}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_TIME: Final = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_UUID: Final = {"type": "string", "format": "uuid"}
_NULL: Final = {"type": "null"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TEMPLATE_REF = _object({"id": _UUID, "version": {"type": "integer"}, "uri": {"type": "string", "format": "uri"}})
_SENT_ENVELOPE = {
    "id": _UUID,
    "reference": _NULLABLE_STRING,
    "uri": {"type": "string", "format": "uri"},
    "template": _TEMPLATE_REF,
    "scheduled_for": _NULLABLE_TIME,
}
_NOTIFICATION = {
    "id": _UUID,
    "reference": _NULLABLE_STRING,
    "email_address": _NULLABLE_STRING,
    "phone_number": _NULLABLE_STRING,
    **{f"line_{i}": _NULL for i in range(1, 7)},
    "postcode": _NULL,
    "type": {"enum": ["sms", "email"]},
    "status": _STRING,
    "template": _TEMPLATE_REF,
    "body": _STRING,
    "subject": _NULLABLE_STRING,
    "created_at": _TIME,
    "created_by_name": _NULL,
    "sent_at": _NULLABLE_TIME,
    "completed_at": _NULLABLE_TIME,
    "scheduled_for": _NULLABLE_TIME,
    "postage": _NULL,
    "one_click_unsubscribe_url": _NULLABLE_STRING,
}
_COST = {
    "cost_details": {
        "type": "object",
        "properties": {
            "billable_sms_fragments": {"type": "integer"},
            "international_rate_multiplier": {"type": "number"},
            "sms_rate": {"type": "number"},
        },
        "additionalProperties": False,
    },
    "cost_in_pounds": {"type": ["number", "null"]},
    "is_cost_data_ready": {"type": "boolean"},
}
_TEMPLATE = {
    "id": _UUID,
    "type": {"enum": ["sms", "email"]},
    "created_at": _TIME,
    "updated_at": _NULLABLE_TIME,
    "created_by": _STRING,
    "version": {"type": "integer"},
    "body": _STRING,
    "subject": _NULLABLE_STRING,
    "name": _STRING,
    "personalisation": {
        "type": "object",
        "additionalProperties": _object({"required": {"const": True}}),
    },
    "postage": _NULL,
    "letter_contact_block": _NULL,
}

SCHEMAS: Final[dict[str, Any]] = {
    "Error": _object(
        {
            "status_code": {"type": "integer"},
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": _object({"error": _STRING, "message": _STRING}),
            },
        }
    ),
    "RouteError": _object({"result": {"const": "error"}, "message": _STRING}),
    "SmsSent": _object(
        {**_SENT_ENVELOPE, "content": _object({"from_number": _STRING, "body": _STRING})},
    ),
    "EmailSent": _object(
        {
            **_SENT_ENVELOPE,
            "content": _object(
                {
                    "from_email": _STRING,
                    "body": _STRING,
                    "subject": _STRING,
                    "one_click_unsubscribe_url": _NULLABLE_STRING,
                }
            ),
            "sanitised_content": {
                "type": "object",
                "additionalProperties": _object({"unsanitised": _STRING, "sanitised": _STRING}),
            },
        },
    ),
    "Notification": _object(_NOTIFICATION),
    "NotificationWithCost": _object({**_NOTIFICATION, **_COST}),
    "NotificationList": _object(
        {
            "notifications": {"type": "array", "items": _ref("Notification")},
            "links": _object(
                {"current": {"type": "string", "format": "uri"}, "next": {"type": "string", "format": "uri"}},
                required=["current"],
            ),
        }
    ),
    "Template": _object(_TEMPLATE),
    "ReceivedTextList": _object(
        {
            "received_text_messages": {
                "type": "array",
                "items": _object(
                    {
                        "id": _UUID,
                        "created_at": _TIME,
                        "service_id": _UUID,
                        "notify_number": _STRING,
                        "user_number": _STRING,
                        "content": _STRING,
                    }
                ),
            },
            "links": _object(
                {"current": {"type": "string", "format": "uri"}, "next": {"type": "string", "format": "uri"}},
                required=["current"],
            ),
        }
    ),
    "TemplateList": _object({"templates": {"type": "array", "items": _ref("Template")}}),
    "TemplatePreview": _object(
        {
            "id": _UUID,
            "type": {"enum": ["sms", "email"]},
            "version": {"type": "integer"},
            "body": _STRING,
            "html": _NULLABLE_STRING,
            "subject": _NULLABLE_STRING,
            "postage": _NULL,
        }
    ),
    "Status": _object({"status": {"const": "ok"}}),
    "WebhookAnswer": _object(
        {
            "result": {"enum": ["success", "error"]},
            "message": {"oneOf": [_STRING, {"type": "array", "items": _STRING}]},
        },
        required=["result"],
    ),
}

_ERRORS_OF_A_CALL: Final = {
    "400": "The request is not valid (ValidationError, BadRequestError)",
    "401": "No token, or not a bearer token (AuthError)",
    "403": "The token is not valid (AuthError)",
    "429": "A rate or daily limit is reached (RateLimitError, TooManyRequestsError)",
    "500": "A fault of Herald's own",
    "503": "Herald cannot take the request now; nothing was accepted, try again",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str, ok: tuple[str, str], body: dict[str, Any] | None = None, not_found: bool = False
) -> dict[str, Any]:
    responses = {ok[0]: _json(_ref(ok[1]), summary)}
    codes = dict(_ERRORS_OF_A_CALL)
    if not_found:
        codes["404"] = "No such notification or template for this service (NoResultFound)"
    responses.update({code: _json(_ref("Error"), text) for code, text in codes.items()})
    operation: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}], "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def _parameter(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _webhook(summary: str, content_type: str) -> dict[str, Any]:
    answers = {
        "200": "Kept: the receipt is durable (or the SNS subscription confirmed)",
        "400": "Not a receipt",
        "401": "Not the provider's credential",
        "403": "SES: not signed by Amazon SNS",
        "500": "A fault of Herald's own",
        "503": "Not kept: post it again",
    }
    responses = {code: _json(_ref("WebhookAnswer"), text) for code, text in answers.items()}
    responses["500"] = _json(_ref("Error"), answers["500"])
    return {
        "summary": summary,
        "security": [{"provider": []}],
        "requestBody": {"required": True, "content": {content_type: {"schema": {"type": "string"}}}},
        "responses": responses,
    }


def _inbound_webhook(summary: str, content_type: str) -> dict[str, Any]:
    """As a receipt's webhook, but Notify answers a kept (or dropped: no service has the number) text with
    {"status": "ok"}."""
    operation = _webhook(summary, content_type)
    operation["responses"]["200"] = _json(_ref("Status"), "Kept: the text is durable (or dropped: no such number)")
    operation["responses"]["400"]["description"] = "Not an inbound message"
    return operation


def document() -> dict[str, Any]:
    template_id = _parameter("template_id", "path", _STRING, required=True)
    list_notifications = _operation(
        "Notifications of the caller's service, newest first, 250 a page", ("200", "NotificationList")
    )
    list_notifications["parameters"] = [
        _parameter("template_type", "query", {"type": "array", "items": {"enum": ["sms", "email", "letter"]}}),
        _parameter("status", "query", {"type": "array", "items": _STRING}),
        _parameter("reference", "query", _STRING),
        _parameter("older_than", "query", _UUID),
        _parameter("include_jobs", "query", {"enum": ["true", "True"]}),
    ]
    get_notification = _operation("One notification, with its cost", ("200", "NotificationWithCost"), not_found=True)
    get_notification["parameters"] = [_parameter("notification_id", "path", _STRING, required=True)]
    get_template = _operation("A template's current version", ("200", "Template"), not_found=True)
    get_template["parameters"] = [template_id]
    get_version = _operation("One version of a template", ("200", "Template"), not_found=True)
    get_version["parameters"] = [
        template_id,
        _parameter("version", "path", {"type": "integer", "minimum": 0}, required=True),
    ]
    preview = _operation(
        "A template rendered with personalisation, sending nothing",
        ("200", "TemplatePreview"),
        validation.json_schema(validation.PREVIEW, allow_unknown=True),
        not_found=True,
    )
    preview["parameters"] = [template_id]
    preview["requestBody"]["required"] = False  # Notify takes an empty body for a template without placeholders
    list_templates = _operation("The service's templates, by name then type", ("200", "TemplateList"))
    list_templates["parameters"] = [_parameter("type", "query", {"enum": ["sms", "email", "letter"]})]
    received_texts = _operation(
        "Text messages sent to the service's inbound number, newest first, 250 a page", ("200", "ReceivedTextList")
    )
    received_texts["parameters"] = [_parameter("older_than", "query", _UUID)]
    letter = _operation(
        "Letters: Herald sends none, so every service is answered as one without the letter permission (400)",
        ("400", "Error"),
        {"oneOf": [validation.json_schema(validation.LETTER), validation.json_schema(validation.PRECOMPILED_LETTER)]},
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald: GOV.UK Notify's v2 API",
            "version": "2",
            "description": (
                "Notify's v2 REST API as Herald serves it; Notify's clients work unchanged. Request bodies "
                f"are JSON (application/json), at most {MAX_BODY_BYTES} bytes. An optional Idempotency-Key "
                "header (printable ASCII, at most 255 characters) makes a repeated send the same notification; "
                "the key sent again with a different request is a 400."
            ),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "provider": {"type": "http", "scheme": "basic", "description": "The provider's callback credential"},
            },
            "schemas": SCHEMAS,
        },
        "paths": {
            "/v2/notifications/sms": {
                "post": _operation("Send a text message", ("201", "SmsSent"), validation.json_schema(validation.SMS))
            },
            "/v2/notifications/email": {
                "post": _operation("Send an email", ("201", "EmailSent"), validation.json_schema(validation.EMAIL))
            },
            "/v2/notifications/letter": {"post": letter},
            "/v2/notifications": {"get": list_notifications},
            "/v2/notifications/{notification_id}": {"get": get_notification},
            "/v2/template/{template_id}": {"get": get_template},
            "/v2/template/{template_id}/version/{version}": {"get": get_version},
            "/v2/template/{template_id}/preview": {"post": preview},
            "/v2/templates": {"get": list_templates},
            "/v2/received-text-messages": {"get": received_texts},
            **{
                path: {"post": _webhook(summary, body)}
                for path, summary, body in (
                    ("/notifications/sms/mmg", "MMG's delivery receipt", "application/json"),
                    ("/notifications/sms/firetext", "Firetext's delivery receipt", "application/x-www-form-urlencoded"),
                    ("/notifications/email/ses", "An Amazon SNS message carrying an SES event", "text/plain"),
                )
            },
            "/notifications/sms/receive/mmg": {
                "post": _inbound_webhook("A text message to an inbound number, from MMG", "application/json")
            },
            "/notifications/sms/receive/firetext": {
                "post": _inbound_webhook(
                    "A text message to an inbound number, from Firetext", "application/x-www-form-urlencoded"
                )
            },
            "/_status": {"get": {"summary": "Health", "responses": {"200": _json(_ref("Status"), "Up")}}},
        },
    }
